"""Start perception_node with a parameter file, topic remaps and the common overrides.

    ros2 launch mtl_perception perception.launch.py model:=/path/to/student.safetensors \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info

Arguments (`ros2 launch mtl_perception perception.launch.py --show-args` lists them): namespace,
image, camera_info, params_file, use_sim_time, and one per start-up parameter of the node
(mtl_perception/ros/launch_args.py derives them from the parameter table): model (required: a
.safetensors or .onnx file), backend, device, precision, num_threads, warmup_runs, autostart,
image_transport, output_resolution, qos_reliability, qos_depth. An argument left out keeps the
params_file value (default: share/mtl_perception/config/perception.yaml, every key commented
with unit and range); a given one overrides it. `autostart:=false` leaves the node unconfigured
for `ros2 lifecycle set /mtl_perception configure` (then `activate`).

The node is required: when it exits the launch ends, and when it exits with an error (a missing
model file, a bad parameter) `ros2 launch` exits non-zero, so a script or a systemd unit sees it.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from mtl_perception.ros.launch_args import node_arguments, node_overrides

NODE_ARGUMENTS = node_arguments()
ARGUMENTS = (
    # name, default, description (the node's parameters: NODE_ARGUMENTS)
    ("params_file",
     PathJoinSubstitution([FindPackageShare("mtl_perception"), "config", "perception.yaml"]),
     "YAML file with the node's parameters (keyed /**/mtl_perception)."),
    ("namespace", "", "Namespace of the node; outputs are <namespace>/mtl_perception/*."),
    ("image", "image", "Input image topic (base name: `<image>/compressed` when compressed)."),
    ("camera_info", "camera_info", "CameraInfo topic of that camera (for ~/points)."),
    ("use_sim_time", "", "true: use /clock (when playing a bag with --clock). Unset: false, or "
                         "params_file's value."),
)


def required_process_exited(event: ProcessExited, context: LaunchContext) -> list[EmitEvent]:
    """End the launch when the node exits; make `ros2 launch` exit non-zero when it failed.

    `Shutdown` alone (the `on_exit=Shutdown()` idiom for required nodes) ends the launch with
    return code 0: LaunchService.run returns 1 only when an exception reaches its event loop, so
    a failed node (exit code != 0 while the launch was not already shutting down) is raised as
    one. An exit during shutdown (Ctrl-C, which the node answers with 0) only ends the launch.
    """
    if event.returncode != 0 and not context.is_shutdown:
        raise RuntimeError(f"required process {event.process_name} exited with code "
                           f"{event.returncode}")
    return [EmitEvent(event=Shutdown(reason=f"{event.process_name} exited"))]


def _node(context: LaunchContext) -> list[Node]:
    """The node with params_file, then only the parameters given as launch arguments."""
    given = {a.name: LaunchConfiguration(a.name).perform(context) for a in NODE_ARGUMENTS}
    overrides = {
        # value_type=str: a string is otherwise read as YAML by launch_ros ("1" -> int)
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in node_overrides(given, NODE_ARGUMENTS).items()}
    sim_time = LaunchConfiguration("use_sim_time").perform(context)
    if sim_time:
        overrides["use_sim_time"] = ParameterValue(sim_time, value_type=bool)
    arg = LaunchConfiguration
    return [Node(
        package="mtl_perception",
        executable="perception_node",
        name="mtl_perception",
        namespace=arg("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[arg("params_file"), overrides],
        remappings=[("image", arg("image")), ("camera_info", arg("camera_info"))],
        on_exit=required_process_exited,
    )]


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(a.name, description=a.description)
                if a.required else
                DeclareLaunchArgument(a.name, default_value="", description=a.description)
                for a in NODE_ARGUMENTS]
    declared += [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, default, description in ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
