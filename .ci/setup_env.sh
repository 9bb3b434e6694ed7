# Sourced by webui.sh and run_tests.sh: create venv/ when missing and install the pinned
# requirements file given as $1, then requirements-nodeps.txt without dependencies, when either
# (or requirements.txt) changed since the last install. Sets SERENA_PYTHON.
# Only Python 3.10+ is needed beforehand; override the interpreter with $python_cmd.
req_file="$1"
py="${python_cmd:-python3}"
if [ ! -x venv/bin/python ]; then
  echo "Creating venv/ with $($py --version 2>&1)"
  "$py" -m venv venv
fi
stamp="venv/.serena-installed-$(basename "$req_file")"
want="$(cat requirements.txt "$req_file" requirements-nodeps.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing pinned requirements from $req_file into venv/ (the first time downloads about 1 GB;"
  echo "pip lists each package as it goes)"
  # The stamp is written only when both installs succeed, so a failed or interrupted install is
  # retried on the next run instead of leaving a half-filled venv marked as ready.
  if venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -r "$req_file" &&
     # Packages whose declared dependencies must not come along (spandrel's torchvision: see the file).
     venv/bin/python -m pip install --disable-pip-version-check --progress-bar on --no-deps -r requirements-nodeps.txt
  then
    echo "$want" > "$stamp"
  else
    echo "Installing the requirements failed (see pip's messages above)." >&2
    return 1 2>/dev/null || exit 1
  fi
fi
SERENA_PYTHON="$PWD/venv/bin/python"
export SERENA_PYTHON
