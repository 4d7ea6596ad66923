#!/usr/bin/env bash
# A chat bot in shell: answers "!date" with the date, by driving
# `chat-client --json` with standard Unix tools only (bash, sed, date).
#
#   examples/chat.sh --server tcp://127.0.0.1:5555 [--nick datebot] [--room lobby]
#
# chat-client runs as a bash coprocess: its JSON events (one object per line)
# are read from one pipe, and what we write to the other pipe it says in the
# room. SIGINT or SIGTERM makes it send /quit, so the others see us leave.
# CHAT_CLIENT names the client program if chat-client is not on the PATH.
set -u

server=tcp://127.0.0.1:5555
nick=datebot
room=lobby
client=${CHAT_CLIENT:-chat-client}

usage() {
    echo "usage: $0 --server ENDPOINT [--nick NAME] [--room ROOM]"
}

while [ $# -gt 0 ]; do
    case $1 in
        --server) server=$2; shift 2 ;;
        --nick) nick=$2; shift 2 ;;
        --room) room=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

# --backlog 0: no stored history, so a restart does not answer old commands.
coproc CHAT { exec "$client" --json --server "$server" --nick "$nick" --room "$room" --backlog 0; }
# Keep our own copies of the pipe ends: bash forgets CHAT once the client exits.
exec {from_chat}<&"${CHAT[0]}" {to_chat}>&"${CHAT[1]}"
client_pid=$CHAT_PID

stopping=0
stop() {
    if [ "$stopping" = 0 ]; then
        stopping=1
        echo "/quit" >&"$to_chat"
    fi
}
trap stop INT TERM

# The value of a string field of a JSON line (field names and nicknames never
# contain quotes; text may contain escaped ones, which this keeps escaped).
field() {
    printf '%s\n' "$2" | sed -n "s/.*\"$1\":\"\(\([^\"\\\\]\|\\\\.\)*\)\".*/\1/p"
}

while true; do
    IFS= read -r line <&"$from_chat"
    status=$?
    if [ "$status" -gt 128 ]; then
        continue  # a signal interrupted read: read on until the client's goodbye
    elif [ "$status" != 0 ]; then
        break  # the client has left and closed its output
    fi
    case $line in
        '{"type":"welcome"'*) echo "$0: joined $room as $nick" >&2 ;;
        '{"type":"error"'*) echo "$0: $(field message "$line")" >&2 ;;
    esac
    case $line in
        '{"type":"message"'*) ;;
        *) continue ;;
    esac
    case $line in
        *'"history":true'*) continue ;;  # replayed, not said now
    esac
    who=$(field nick "$line")
    [ "${who,,}" = "${nick,,}" ] && continue  # never answer ourselves
    case $(field text "$line") in
        '!date') echo "$who: $(date '+%Y-%m-%d %H:%M:%S %Z')" >&"$to_chat" ;;
    esac
done

exec {to_chat}>&-
wait "$client_pid"
