#!/bin/sh
# Print the accounts.conf user block of each agent named on the command line.
#
#   deploy/nats/agent-users.sh a1 a2 gpu-node-1          # prefix "fleet"
#   FLEET_PREFIX=prod deploy/nats/agent-users.sh a1      # subjects prod.*, streams PROD_*
#
# Paste the output into the users list of account FLEET (accounts.conf), and set
# NATS_AGENT_<NAME>_PASSWORD for nats-server (upper case, "-" as "_"). nats-server expands
# permission templates such as {{name()}} only for JWT users, not for users in a config
# file, so each agent gets its own explicit block. Agent <name> may publish only on
# subjects with <name> in the worker position (shared/wire/subjects.py agent_publish) and
# receive only its own assignments and cancels (agent_subscribe) and the replies to its own
# requests (inbox prefix _INBOX_agent-<name>, shared/connection.py inbox_prefix); besides
# that it may create the streams, write values under its own user in the payload stream
# ($prefix.payload.agent-<name>.>) and read any there by subject.
set -eu

prefix=${FLEET_PREFIX:-fleet}
case $prefix in
  '' | *[!a-z0-9.-]* | .* | *. | *..*)
    echo "agent-users.sh: invalid prefix '$prefix'" >&2
    exit 2
    ;;
esac
upper=$(printf '%s' "$prefix" | tr 'a-z.-' 'A-Z__')
[ $# -gt 0 ] || { echo "usage: agent-users.sh NAME..." >&2; exit 2; }

for name in "$@"; do
  case $name in
    '' | *[!A-Za-z0-9_-]*)
      echo "agent-users.sh: '$name' is not a worker name (letters, digits, '_', '-')" >&2
      exit 2
      ;;
  esac
  variable=NATS_AGENT_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')_PASSWORD
  cat <<BLOCK
      {
        user: agent-$name
        password: \$$variable
        permissions: {
          publish = {
            allow = [
              "$prefix.agent.*.$name",
              "$prefix.ack.$name",
              "$prefix.outcome.$name.>",
              "$prefix.client.*.$name",
              "$prefix.payload.agent-$name.>",
              "\$JS.API.STREAM.INFO.${upper}_OUTCOMES",
              "\$JS.API.STREAM.INFO.${upper}_SUBMISSIONS",
              "\$JS.API.STREAM.CREATE.${upper}_OUTCOMES",
              "\$JS.API.STREAM.CREATE.${upper}_SUBMISSIONS",
              "\$JS.API.STREAM.INFO.${upper}_PAYLOADS",
              "\$JS.API.STREAM.CREATE.${upper}_PAYLOADS",
              "\$JS.API.DIRECT.GET.${upper}_PAYLOADS.>",
            ]
          }
          subscribe = {
            allow = ["$prefix.worker.$name.>", "_INBOX_agent-$name.>"]
          }
        }
      }
BLOCK
done
