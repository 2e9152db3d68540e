"""Start perception_node with a parameter file, topic remaps and the common overrides.

    ros2 launch mtl_perception perception.launch.py model:=/path/to/student.safetensors \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info

Arguments (`ros2 launch mtl_perception perception.launch.py --show-args` lists them):
model, params_file, namespace, image, camera_info, image_transport, backend, device,
use_sim_time. Values given here override those in params_file; everything else comes from
params_file (default: share/mtl_perception/config/perception.yaml, every key commented with unit
and range).

The node is required: when it exits the launch ends, and when it exits with an error (a missing
model file, a bad parameter) `ros2 launch` exits non-zero, so a script or a systemd unit sees it.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent
from launch.events import Shutdown
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

CHOICES = {"image_transport": ["raw", "compressed"], "backend": ["auto", "torch", "onnxruntime"]}
ARGUMENTS = (
    # name, default (None = required), description
    ("model", None, "Exported model artifact (.safetensors from `mtl-train export`)."),
    ("params_file",
     PathJoinSubstitution([FindPackageShare("mtl_perception"), "config", "perception.yaml"]),
     "YAML file with the node's parameters (keyed /**/mtl_perception)."),
    ("namespace", "", "Namespace of the node; outputs are <namespace>/mtl_perception/*."),
    ("image", "image", "Input image topic (base name: `<image>/compressed` when compressed)."),
    ("camera_info", "camera_info", "CameraInfo topic of that camera (for ~/points)."),
    ("image_transport", "raw", "raw (sensor_msgs/Image) or compressed (jpeg/png)."),
    ("backend", "auto", "What runs the network: auto (onnxruntime for .onnx, torch for "
                        ".safetensors), torch or onnxruntime."),
    ("device", "auto", "Inference device: auto, cpu, cuda or cuda:N."),
    ("use_sim_time", "false", "Use /clock (true when playing a bag with --clock)."),
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


def generate_launch_description() -> LaunchDescription:
    declared = []
    for name, default, description in ARGUMENTS:
        if default is None:
            declared.append(DeclareLaunchArgument(name, description=description))
        else:
            declared.append(DeclareLaunchArgument(name, default_value=default,
                                                  description=description,
                                                  choices=CHOICES.get(name)))
    arg = LaunchConfiguration
    node = Node(
        package="mtl_perception",
        executable="perception_node",
        name="mtl_perception",
        namespace=arg("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            arg("params_file"),
            {
                # value_type=str: a launch value is otherwise read as YAML ("1" -> int).
                "model_path": ParameterValue(arg("model"), value_type=str),
                "device": ParameterValue(arg("device"), value_type=str),
                "image_transport": ParameterValue(arg("image_transport"), value_type=str),
                "backend": ParameterValue(arg("backend"), value_type=str),
                "use_sim_time": ParameterValue(arg("use_sim_time"), value_type=bool),
            },
        ],
        remappings=[("image", arg("image")), ("camera_info", arg("camera_info"))],
        on_exit=required_process_exited,
    )
    return LaunchDescription([*declared, node])
