# Sourced by scripts/test*.sh: `venv DIR [pip flags]` makes the virtual environment DIR if it is absent, upgrades
# its pip and installs the pinned CPU torch; then `install ARGS` runs DIR's pip with those flags. Pinned: on this
# project's machines the 2.13.0 CPU wheel is on local disk; an unpinned torch pulls a CUDA build.
venv() {
  V=$1
  shift
  PIP_FLAGS=(-q "$@")
  [ -x "$V/bin/python" ] || "${PYTHON:-python3}" -m venv "$V"
  install --upgrade pip
  install "torch==2.13.0"
}

install() { "$V/bin/python" -m pip install "${PIP_FLAGS[@]}" "$@"; }
