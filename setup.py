"""ament_python package `semdepth_ros`: installs semdepth_core, semdepth_ros and training.

Install torch first with `pip install torch==2.13.0` (the local CPU wheel on these machines);
an unpinned torch would pull gigabytes of CUDA wheels.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "semdepth_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Semantically-guided self-supervised monocular depth: ROS 2 node and training library",
    packages=find_packages(include=["semdepth_core", "semdepth_core.*", "semdepth_ros", "semdepth_ros.*",
                                    "training", "training.*"]),
    package_data={"training": ["configs/*.yaml"],
                  "semdepth_core": ["export/cuda/*.cu", "export/cuda/*.h", "data/*.txt"],
                  "semdepth_ros": ["weights/*.ckpt", "weights/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        # the shipped weights where a ROS user looks for package data (also inside the Python package)
        (f"share/{PACKAGE}/weights", glob("semdepth_ros/weights/*.ckpt") + glob("semdepth_ros/weights/*.md")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",
        "numpy",
        "opencv-python-headless",
        "pyyaml",
        "tqdm",
        "tensorboard",
        "onnx",
        "onnxruntime",
        "matplotlib",
        "safetensors",
        "scipy",
    ],
    extras_require={
        "ros": [
            "ros-rclpy", "ros-std-msgs", "ros-sensor-msgs", "ros-nav-msgs", "ros-geometry-msgs",
            "ros-rmw-fastrtps-cpp", "ros-diagnostic-msgs", "ros-lifecycle-msgs",
            "rosbags",
        ],
        "dev": ["pytest", "pytest-timeout", "hypothesis"],
        "trt": ["tensorrt", "pycuda"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "depth_node = semdepth_ros.node:main",
            "kitti_to_bag = semdepth_ros.kitti_to_bag:main",
            "semdepth_replay = semdepth_ros.replay:main",
            "semdepth_train = training.train:main",
            "semdepth_evaluate = training.evaluate:main",
            "semdepth_export = semdepth_core.export.__main__:main",
        ],
    },
)
