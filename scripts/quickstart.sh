#!/usr/bin/env bash
# quickstart.sh — on a fresh Debian 12 machine (as root): install sparc-agent and its test host,
# build the stand-in images, and apply examples/sparc-avatar.yaml; then show its status.
#
# The stand-in images answer like the real SPARC services (gRPC health, HTTP, WebSocket, STUN, the
# renderer's process) under the real image names, so the example profile runs unchanged. This machine
# has no login session, so a private user manager is started (scripts/dev-manager.py); on PubApps use
# install.sh instead. Stop everything with: python3 scripts/dev-manager.py stop quickstart
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-host-setup.sh --images
[ -x .venv/bin/sparc-agent ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet -e '.[test]'

# the example reads the OpenAI key from a file; a placeholder will do for the stand-in MAS
key=${SPARC_OPENAI_KEY_FILE:-$HOME/.config/sparc/openai.key}
if [ ! -e "$key" ]; then
  mkdir -p "$(dirname "$key")" && (umask 077 && echo "sk-placeholder-for-the-stand-in" > "$key")
  echo "quickstart: wrote a placeholder key to $key (put your real key there for the real MAS)"
fi

eval "$(.venv/bin/python scripts/dev-manager.py start quickstart)"
.venv/bin/sparc-agent apply examples/sparc-avatar.yaml --set "secrets.openai-api-key.file=$key"
.venv/bin/sparc-agent status sparc-avatar
