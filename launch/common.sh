# shellcheck shell=bash
# Sourced by the launch/*.sh scripts: `run` prints each command, quoted so that it can be pasted
# into a shell, and runs it (with --dry-run it only prints it); `parse_flags` reads --flag=VALUE
# arguments into variables. Kept to bash 3.2 (macOS /bin/bash): arrays that may be empty are
# expanded as ${a[@]+"${a[@]}"}, which `set -u` accepts there.

# shellcheck disable=SC2034  # REPO_DIR and TPU_FLAGS are for the scripts
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=$(basename "$0")
DRY_RUN=0
ARGS=() # the arguments a script passes on (see parse_flags)
SPECS=()

note() { echo "$SCRIPT: $*" >&2; }
die() {
  note "error: $*"
  exit 1
}
usage_error() {
  note "error: $*"
  echo "Run '$SCRIPT --help' for usage." >&2
  exit 2
}

# quote ARG...: the arguments as one line of shell words, quoted as Python's shlex.quote does,
# except that only the value of --flag=VALUE is quoted (--workdir='my runs', not '--workdir=...').
quote() {
  local safe='^[A-Za-z0-9_@%+=:,./-]+$' flag='^(--?[A-Za-z0-9_.-]+=)(.*)$' sq="'" esc="'\\''"
  local arg prefix words=() IFS=' '
  for arg; do
    prefix=""
    if [[ ! $arg =~ $safe ]]; then
      if [[ $arg =~ $flag ]]; then
        prefix=${BASH_REMATCH[1]}
        arg=${BASH_REMATCH[2]}
      fi
      arg="'${arg//$sq/$esc}'"
    fi
    words+=("$prefix$arg")
  done
  echo "${words[*]-}"
}

# run CMD...: print CMD on stdout under --dry-run; otherwise print it on stderr and run it.
run() {
  if ((DRY_RUN)); then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

# parse_flags "SPEC..." "$@": read the script's arguments. Each word of SPEC is one of
#   flag=VAR  --flag=VALUE (or --flag VALUE) sets $VAR, which defaults to the environment's $VAR
#   flag      a switch: --flag sets $FLAG (upper case, - as _, so --no-wait sets NO_WAIT) to 1
#   PATTERN   starting with - or *: matching arguments go to ARGS in order, and so does all after
#             a `--` that matches (e.g. '--config.*', '--', or '*' for every argument)
# --dry-run and -h/--help (the script's header comment) are every script's; all else is an error.
parse_flags() {
  local spec var arg
  read -r -d '' -a SPECS <<<"$1" || true
  shift
  for spec in "${SPECS[@]}"; do
    case $spec in
      [-*]*) ;;
      *=*)
        var=${spec#*=}
        printf -v "$var" %s "${!var:-}"
        ;;
      *) printf -v "$(switch_var "$spec")" %s 0 ;;
    esac
  done
  while (($#)); do
    arg=$1
    shift
    case $arg in
      --dry-run) DRY_RUN=1 && continue ;;
      -h | --help) usage && exit 0 ;;
    esac
    for spec in "${SPECS[@]}"; do
      case $spec in
        [-*]*)
          # shellcheck disable=SC2053  # a pattern on purpose
          [[ $arg == $spec ]] || continue
          if [[ $arg == -- ]]; then
            ARGS+=("$@")
            return 0
          fi
          ARGS+=("$arg")
          ;;
        *=*)
          var=${spec#*=}
          if [[ $arg == "--${spec%%=*}="* ]]; then
            printf -v "$var" %s "${arg#*=}"
          elif [[ $arg == "--${spec%%=*}" ]]; then
            [[ $# -gt 0 && $1 != -* ]] || usage_error "$arg needs a value ($arg=...)"
            printf -v "$var" %s "$1"
            shift
          else
            continue
          fi
          ;;
        *)
          [[ $arg == "--$spec" ]] || continue
          printf -v "$(switch_var "$spec")" %s 1
          ;;
      esac
      continue 2
    done
    usage_error "unknown argument: $arg"
  done
}

switch_var() { echo "$1" | tr 'a-z-' 'A-Z_'; }

# usage: the script's header comment, from its second line to the first that is not a comment.
usage() {
  awk 'NR > 1 { if (!/^#/) exit; sub(/^# ?/, ""); print }' "$0"
  printf '\n%s\n' "Every launch script takes --dry-run (print the commands, run nothing) and -h/--help."
}

# require_flags FLAG...: a usage error naming every one of these value flags still empty.
require_flags() {
  local flag spec var missing=()
  for flag; do
    for spec in "${SPECS[@]}"; do
      var=${spec#*=}
      if [[ $spec == "$flag="* && -z ${!var} ]]; then
        missing+=("--$flag (or \$$var)")
      fi
    done
  done
  if ((${#missing[@]})); then
    local IFS=,
    usage_error "missing required flag(s):${missing[*]/#/ }"
  fi
}

# --- Cloud TPU ---------------------------------------------------------------------------------
# Every tpu_*.sh takes these flags, and sets SCOPE to the --zone (and --project) of its TPU, which
# every gcloud command takes.
# shellcheck disable=SC2034
TPU_FLAGS="name=TPU_NAME zone=ZONE project=PROJECT_ID"
SCOPE=()

# tpu_ssh WORKER COMMAND: run a shell command on one worker, or on all of them at once ("all").
# Newlines in COMMAND become spaces, so a dry-run prints it on one line: end statements with ;.
tpu_ssh() {
  local newline=$'\n'
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${SCOPE[@]}" --worker="$1" \
    --command="${2//$newline/ }"
}
