# Sourced by the scripts: install_venv DIR REQUIREMENTS creates the virtualenv and installs the pinned
# requirements, once (again only when the requirements file changes). Each tool has its own virtualenv:
# moto and cargo-lambda (.venv), the SAM CLI with cfn-lint (.venv-sam), checkov (.venv-checkov); their
# dependencies clash when mixed.
install_venv() {
  local dir="$1" requirements="$2"
  local stamp="$dir/.$(basename "$requirements")"
  # Scripts run side by side (the IaC checks' tests) may ask for the same virtualenv at once: one installs
  # it while the others wait on its lock, then find its stamp.
  (
    flock 9 || exit 1
    if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
      echo "installing $requirements into $dir" >&2
      # `|| exit 1`: called on the left of `&&`, a function runs without `set -e`, and a failed install
      # must not leave its stamp.
      python3 -m venv "$dir" || exit 1
      "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" || exit 1
      cp "$requirements" "$stamp" || exit 1
    fi
  ) 9>"$dir.lock"
}

# Every tool the tests use, each virtualenv installed beside the others (pip waits on the network and the disk
# more than on a core).
install_tools() {
  local failed=0 pids=()
  (install_venv .venv tools/requirements-test.txt && install_venv .venv tools/requirements-lambda.txt) &
  pids+=($!)
  install_venv .venv-sam infra/requirements-sam.txt &
  pids+=($!)
  install_venv .venv-checkov infra/requirements-checkov.txt &
  pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return "$failed"
}
