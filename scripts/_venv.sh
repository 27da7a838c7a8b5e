# Sourced by demo.sh and test.sh (from the repository root): the .venv they both install into.

# install_voxpipe EXTRAS: create .venv when missing (with $PYTHON, default python3), then install
# voxpipe in editable mode with EXTRAS (e.g. "offline", "all,dev").
install_voxpipe() {
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "${PYTHON:-python3}" -m venv .venv
  fi
  echo "==> installing voxpipe[$1]"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$1]"
}
