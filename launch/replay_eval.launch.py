"""Replay evaluation: start perception_node and feed it a recorded bag with `mtl-replay`.

    ros2 launch mtl_perception replay_eval.launch.py bag:=run1.mcap \
        model:=student.safetensors report:=out/ rate:=1.0

The node runs as the launch system's own process (parameters from params_file, reliable QoS so
dropped frames measure the node and not lost fragments of large images); `mtl-replay
--no-start-node` publishes the bag's colour images + camera_info with their recorded timing,
collects the outputs by stamp, scores them and writes out/report.md + report.json (and a result
bag with result_bag:=out/result). The launch ends when the replay ends. `mtl-replay` alone
(without launch) starts the node itself and does the same.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    # name, default (None = required), description
    ("bag", None, "Recorded bag: .bag, .db3 or .mcap file, or a ROS 2 bag folder."),
    ("model", None, "Exported model artifact (.safetensors from `mtl-train export`)."),
    ("report", "replay_report", "Folder for report.md, report.json."),
    ("rate", "1.0", "Playback speed relative to the recorded stamps, or 'max'."),
    ("result_bag", "", "If set, write inputs + outputs to this mcap bag folder (must not exist)."),
    ("config", "", "Experiment YAML whose bag.* section picks topics and sync settings."),
    ("params_file",
     PathJoinSubstitution([FindPackageShare("mtl_perception"), "config", "perception.yaml"]),
     "YAML file with the node's parameters."),
    ("device", "auto", "Inference device: auto, cpu, cuda or cuda:N."),
)


def _replay(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, *_ in ARGUMENTS}
    cmd = ["mtl-replay", value["bag"], "--model", value["model"], "--report", value["report"],
           "--rate", value["rate"], "--no-start-node"]
    if value["result_bag"]:
        cmd += ["--result-bag", value["result_bag"]]
    if value["config"]:
        cmd += ["--config", value["config"]]
    replay = ExecuteProcess(cmd=cmd, name="mtl_replay", output="screen")
    done = RegisterEventHandler(OnProcessExit(target_action=replay,
                                              on_exit=[EmitEvent(event=Shutdown(
                                                  reason="replay finished"))]))
    return [replay, done]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, description=description)
                if default is None else
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS]
    arg = LaunchConfiguration
    node = Node(
        package="mtl_perception",
        executable="perception_node",
        name="mtl_perception",
        output="screen",
        parameters=[
            arg("params_file"),
            {
                "model_path": ParameterValue(arg("model"), value_type=str),
                "device": ParameterValue(arg("device"), value_type=str),
                "qos.reliability": "reliable",
            },
        ],
        remappings=[("image", "/image"), ("camera_info", "/camera_info")],
    )
    return LaunchDescription([*declared, node, OpaqueFunction(function=_replay)])
