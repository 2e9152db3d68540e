"""Replay evaluation: start perception_node and feed it a recorded bag with `mtl-replay`.

    ros2 launch mtl_perception replay_eval.launch.py bag:=run1.mcap \
        model:=student.safetensors report:=out/ rate:=1.0

The node runs as the launch system's own process (parameters from params_file, reliable QoS so
dropped frames measure the node and not lost fragments of large images); `mtl-replay
--no-start-node` (lib/mtl_perception/mtl-replay of the install space, where colcon puts it)
publishes the bag's colour images + camera_info with their recorded timing, collects the outputs
by stamp, scores them and writes out/report.md + report.json (and a result bag with
result_bag:=out/result). The launch ends when the replay ends, with the replay's exit status: 0
when it wrote its report, non-zero when the replay or the node failed. `mtl-replay` alone
(without launch) starts the node itself and does the same.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    OpaqueFunction,
)
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import ExecutableInPackage, FindPackageShare

CHOICES = {"backend": ["auto", "torch", "onnxruntime"]}
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
    ("backend", "auto", "What runs the network: auto (onnxruntime for .onnx, torch for "
                        ".safetensors), torch or onnxruntime."),
    ("device", "auto", "Inference device: auto, cpu, cuda or cuda:N."),
)


def required_process_exited(event: ProcessExited, context: LaunchContext) -> list[EmitEvent]:
    """End the launch when the node or the replay exits; non-zero `ros2 launch` when it failed.

    `Shutdown` alone ends a launch with return code 0 (LaunchService.run returns 1 only when an
    exception reaches its event loop), so a failure (exit code != 0 while the launch was not
    already shutting down) is raised as one. An exit during shutdown only ends the launch.
    """
    if event.returncode != 0 and not context.is_shutdown:
        raise RuntimeError(f"required process {event.process_name} exited with code "
                           f"{event.returncode}")
    return [EmitEvent(event=Shutdown(reason=f"{event.process_name} exited"))]


def _replay(context: LaunchContext) -> list[ExecuteProcess]:
    value = {name: LaunchConfiguration(name).perform(context) for name, *_ in ARGUMENTS}
    # colcon installs console scripts in lib/<package>, not on PATH (setup.cfg install_scripts)
    exe = ExecutableInPackage(executable="mtl-replay", package="mtl_perception").perform(context)
    cmd = [exe, value["bag"], "--model", value["model"], "--report", value["report"],
           "--rate", value["rate"], "--no-start-node"]
    if value["result_bag"]:
        cmd += ["--result-bag", value["result_bag"]]
    if value["config"]:
        cmd += ["--config", value["config"]]
    return [ExecuteProcess(cmd=cmd, name="mtl_replay", output="screen",
                           on_exit=required_process_exited)]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, description=description)
                if default is None else
                DeclareLaunchArgument(name, default_value=default, description=description,
                                      choices=CHOICES.get(name))
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
                "backend": ParameterValue(arg("backend"), value_type=str),
                "device": ParameterValue(arg("device"), value_type=str),
                "qos.reliability": "reliable",
            },
        ],
        remappings=[("image", "/image"), ("camera_info", "/camera_info")],
        on_exit=required_process_exited,
    )
    return LaunchDescription([*declared, node, OpaqueFunction(function=_replay)])
