#!/usr/bin/env bash
# quickstart.sh — on a fresh Debian 12 machine (as root): install sparc-agent and its test host, build the
# stand-in images, apply examples/sparc-avatar.yaml, and leave the agent running as sparc-agent.service,
# supervising it; then show the stack's status and how to watch the agent heal it.
#
# The stand-in images answer like the real SPARC services (gRPC health, HTTP, WebSocket, STUN, the
# renderer's process) under the real image names, so the example profile runs unchanged. This machine
# has no login session, so a private user manager is started (scripts/dev-manager.py); on PubApps use
# install.sh instead (docs/quickstart-pubapps.md). Stop everything with:
#   python3 scripts/dev-manager.py stop quickstart
# Exit: 0 the stack is healthy and the agent active; 1 it is not (the output says what is wrong).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

bash scripts/test-host-setup.sh --images
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet -e '.[test]'

# the example reads the OpenAI key from this file; a placeholder will do for the stand-in MAS
key=$HOME/.config/sparc/openai.key
if [ ! -e "$key" ]; then
  mkdir -p "$(dirname "$key")" && (umask 077 && echo "sk-placeholder-for-the-stand-in" >"$key")
  echo "quickstart: wrote a placeholder key to $key (put your real key there for the real MAS)"
fi
# the TURN server's secret (coturn use-auth-secret), read by coturn and the webrtc probe alike
turn=$HOME/.config/sparc/turn-secret.conf
if [ ! -e "$turn" ]; then
  (umask 077 && echo "static-auth-secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" >"$turn")
  echo "quickstart: wrote a random TURN secret to $turn"
fi

eval "$(.venv/bin/python scripts/dev-manager.py start quickstart)"
.venv/bin/sparc-agent apply examples/sparc-avatar.yaml

# The agent, as install.sh would install it, but running this checkout's sparc-agent. It applies the
# profiles in its profiles dir (the example, copied there) and supervises every applied stack.
units=$XDG_CONFIG_HOME/systemd/user
profiles=$XDG_CONFIG_HOME/sparc-agent/profiles
mkdir -p "$units" "$profiles"
cp examples/sparc-avatar.yaml "$profiles/sparc-avatar.yaml"
.venv/bin/sparc-agent render-agent-unit --exec-start "$REPO/.venv/bin/sparc-agent" >"$units/sparc-agent.service"
systemctl --user daemon-reload
systemctl --user enable --quiet sparc-agent.service
# Type=notify: this returns once the agent has applied the profile (a no-op now) and adopted the stack
systemctl --user restart sparc-agent.service
# READY=1 comes after adoption; the agent's first probes follow within a probe interval or two
for _ in $(seq 60); do
  text=$(systemctl --user show -p StatusText --value sparc-agent.service)
  ok=${text%%/*} rest=${text#*/}
  [ "$ok" = "${rest%% *}" ] && break # "5/5 healthy"
  sleep 0.5
done
state=$(systemctl --user is-active sparc-agent.service || true)
echo "quickstart: sparc-agent.service is $state: $(systemctl --user show -p StatusText --value sparc-agent.service)"

status=0
.venv/bin/sparc-agent status sparc-avatar || status=1
[ "$state" = active ] || status=1

cat <<'EOF'

Watch the agent heal the stack (in this directory; the first line points systemctl at the quickstart's
user manager, which has no login session of its own):

  eval "$(python3 scripts/dev-manager.py start quickstart)"
  podman kill sparc-avatar-mas                 # the MAS container dies
  .venv/bin/sparc-agent status sparc-avatar    # mas: BACKOFF or STARTING, then HEALTHY; restarts 1
  .venv/bin/sparc-agent logs sparc-avatar -f   # the agent's decisions and the containers' output
  systemctl --user status sparc-agent          # the agent itself: "5/5 healthy"

Stop everything (stack, agent, user manager): python3 scripts/dev-manager.py stop quickstart
EOF
exit $status
