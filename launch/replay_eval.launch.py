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

The node's start-up parameters are launch arguments too (mtl_perception/ros/launch_args.py:
backend, device, precision, num_threads, warmup_runs, output_resolution, qos_depth), left out =
params_file's value; the replay fixes autostart (true), image_transport (raw, what it publishes)
and qos.reliability (reliable).
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

from mtl_perception.ros.launch_args import node_arguments, node_overrides

# what the replay needs of the node, whatever params_file says
FIXED = {"autostart": True, "image_transport": "raw", "qos.reliability": "reliable"}
NODE_ARGUMENTS = node_arguments(fixed=FIXED)
ARGUMENTS = (
    # name, default (None = required), description
    ("bag", None, "Recorded bag: .bag, .db3 or .mcap file, or a ROS 2 bag folder."),
    ("report", "replay_report", "Folder for report.md, report.json."),
    ("rate", "1.0", "Playback speed relative to the recorded stamps, or 'max'."),
    ("result_bag", "", "If set, write inputs + outputs to this mcap bag folder (must not exist)."),
    ("config", "", "Experiment YAML whose bag.* section picks topics and sync settings."),
    ("params_file",
     PathJoinSubstitution([FindPackageShare("mtl_perception"), "config", "perception.yaml"]),
     "YAML file with the node's parameters."),
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
    value = {name: LaunchConfiguration(name).perform(context)
             for name in [n for n, *_ in ARGUMENTS] + ["model"]}
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


def _node(context: LaunchContext) -> list[Node]:
    """The node with params_file, the replay's fixed values, then the arguments given."""
    given = {a.name: LaunchConfiguration(a.name).perform(context) for a in NODE_ARGUMENTS}
    overrides = {
        # value_type=str: a string is otherwise read as YAML by launch_ros ("1" -> int)
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in {**FIXED, **node_overrides(given, NODE_ARGUMENTS)}.items()}
    return [Node(
        package="mtl_perception",
        executable="perception_node",
        name="mtl_perception",
        output="screen",
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[("image", "/image"), ("camera_info", "/camera_info")],
        on_exit=required_process_exited,
    )]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, description=description)
                if default is None else
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS]
    declared += [DeclareLaunchArgument(a.name, description=a.description)
                 if a.required else
                 DeclareLaunchArgument(a.name, default_value="", description=a.description)
                 for a in NODE_ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=_node),
                              OpaqueFunction(function=_replay)])
