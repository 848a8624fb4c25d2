"""Launch semdepth_ros `depth_node`.

    ros2 launch semdepth_ros depth.launch.py        # the shipped weights, topics image / camera_info / odom
    ros2 launch semdepth_ros depth.launch.py checkpoint:=/path/model.ckpt image:=/camera/image_raw \\
        camera_info:=/camera/camera_info odom:=/odom namespace:=front image_transport:=compressed

Equivalent command line (what tests/test_node.py runs):

    depth_node --ros-args -r __ns:=/<namespace> --params-file <share>/config/depth.yaml \\
        -p checkpoint:=... -p backend:=... -p image_transport:=... -p image_qos:=... -p use_sim_time:=... \\
        -r image:=<image> -r camera_info:=<camera_info> -r odom:=<odom>

with FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_large_images.xml in its environment (unless
already set, or fastdds_profile:=""): a shared-memory segment that holds camera-sized frames.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = "semdepth_ros"
EXECUTABLE = "depth_node"
NODE_NAME = "depth_node"
PROFILE = "fastdds_large_images.xml"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS 3 (Kilted); Humble/Jazzy read FASTRTPS_DEFAULT_PROFILES_FILE


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "depth.yaml")
    default_profile = os.path.join(get_package_share_directory(PACKAGE), "config", PROFILE)
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("image", default_value="image", description="input sensor_msgs/Image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info",
                              description="input sensor_msgs/CameraInfo topic"),
        DeclareLaunchArgument("odom", default_value="odom",
                              description="input nav_msgs/Odometry topic (scale.mode odometry)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="semdepth checkpoint (.ckpt); empty = the params file's (default: the "
                                          "shipped weights)"),
        DeclareLaunchArgument("image_transport", default_value="",
                              description="raw | compressed (CompressedImage on <image>/compressed); empty = the "
                                          "params file's (raw)"),
        DeclareLaunchArgument("image_qos", default_value="",
                              description="auto | sensor_data | reliable; empty = the params file's (auto)"),
        DeclareLaunchArgument("fastdds_profile", default_value=default_profile,
                              description="Fast DDS XML profile for the node process (large shared-memory segment "
                                          "for camera-sized images); empty = none"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | torch | onnxruntime | tensorrt; empty = the params file's"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS parameters file (depth_node: ros__parameters: ...)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_depth_node)])


def _depth_node(context):
    # checkpoint / backend given on the command line override the params file; left empty they
    # do not (a plain parameters dict would overwrite the file's values with the empty defaults)
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")}
    for name in ("checkpoint", "backend", "image_transport", "image_qos"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    profile = LaunchConfiguration("fastdds_profile").perform(context)
    env = {PROFILE_ENV: profile} if profile and PROFILE_ENV not in os.environ else {}
    node = LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        additional_env=env,
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("odom", LaunchConfiguration("odom")),
        ],
    )
    return [node]
