#!/usr/bin/env bash
# CI's second ROS tier: the ROS tests (test/ros, marker `ros`) on ROS 2 Jazzy's Python wheels
# (ros-jazzy-*, Fast DDS 2.14) in their own venv; `make test` runs the whole suite on Kilted's
# wheels (Fast DDS 3.2) in .venv. `--setup-only` builds the venv and stops; other arguments go to
# pytest. The venv is rebuilt only when setup.py, package.xml or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${JAZZY_VENV:-.venv-jazzy}
PY=$VENV/bin/python
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
STAMP=$VENV/.setup-done
JAZZY_PACKAGES=('ros-jazzy-rclpy[fastrtps]' ros-jazzy-sensor-msgs ros-jazzy-std-msgs
                ros-jazzy-diagnostic-msgs ros-jazzy-lifecycle-msgs)

quiet_pip() { grep -v 'is ignored: it is neither' || true; }
if [[ ! -f $STAMP || setup.py -nt $STAMP || package.xml -nt $STAMP || .ci/jazzy.sh -nt $STAMP ]]
then
  test -x "$PY" || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip setuptools wheel 2>&1 | quiet_pip
  # torch first and pinned, so that nothing later resolves it to a CUDA build
  "$PY" -m pip install -q "torch==$TORCH_VERSION" 2>&1 | quiet_pip
  # the extras `make setup` installs: the demo test needs `train` (TensorBoard logs)
  "$PY" -m pip install -q -e '.[onnx,train,test]' "${JAZZY_PACKAGES[@]}" 2>&1 | quiet_pip
  touch "$STAMP"
fi
[[ ${1:-} == --setup-only ]] && exit 0

# Loopback DDS as in the Makefile. Fast DDS 2.x reads FASTRTPS_DEFAULT_PROFILES_FILE only (3.x:
# FASTDDS_...): without it Jazzy ignores the profile and loses best-effort 640x480 frames.
export FASTDDS_DEFAULT_PROFILES_FILE=$PWD/config/fastdds_loopback.xml
export FASTRTPS_DEFAULT_PROFILES_FILE=$FASTDDS_DEFAULT_PROFILES_FILE
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(python3 -c 'import random; print(random.randint(1, 101))')}
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
"$PY" -c "from importlib.metadata import version as v
print('ROS 2 Jazzy tier: rclpy', v('ros-rclpy'), '(ros-jazzy-rclpy), Fast DDS', v('ros-fastrtps'))"
exec "$PY" -m pytest test/ros -m 'ros and not slow and not gpu' "$@"
