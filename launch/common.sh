# shellcheck shell=bash
# Sourced by the launch/*.sh scripts: flag parsing with environment-variable defaults, generated
# --help, --dry-run, shell quoting and the gcloud/ssh helpers the Cloud TPU scripts share.
#
# A script declares its flags, then parses:
#
#   USAGE="one-paragraph description"
#   tpu_flags                                   # --name, --zone, --project
#   value_flag lines LOG_LINES N "lines of history to print" 100
#   switch_flag no-follow NO_FOLLOW "print and exit instead of following"
#   parse_flags "$@"
#   require_flags name zone
#
# A value flag is written `--flag=VALUE` or `--flag VALUE` and defaults to the environment
# variable of the same name as its shell variable. Every script also takes --dry-run (print the
# commands, one per line and quoted for a POSIX shell, instead of running them; nothing else is
# run, so gcloud and git need not be installed) and -h/--help.
#
# Kept to bash 3.2 (macOS /bin/bash): no associative arrays, no ${x,,}, and arrays that may be
# empty are expanded as ${a[@]+"${a[@]}"}.

# shellcheck disable=SC2034  # LAUNCH_DIR and REPO_DIR are for the scripts that source this
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$LAUNCH_DIR")"
SCRIPT_NAME="$(basename "$0")"

DRY_RUN=0
USAGE=""            # the description --help prints
SYNOPSIS="[options]"
FLAG_SPECS=()       # "kind|name|VAR|METAVAR|help", kind is value or switch
EXTRA_ARGS=()       # arguments accepted beyond the flags (see ACCEPT_EXTRA, AFTER_DASHDASH)
ACCEPT_EXTRA=""     # a pattern: arguments matching it are collected into EXTRA_ARGS
AFTER_DASHDASH=""   # if set, `--` is allowed and what follows goes to EXTRA_ARGS; its help line
EXTRA_HINT=""       # added to the "unknown argument" message

die() {
  echo "$SCRIPT_NAME: error: $*" >&2
  exit 1
}

usage_error() {
  echo "$SCRIPT_NAME: error: $*" >&2
  echo "Run '$SCRIPT_NAME --help' for usage." >&2
  exit 2
}

note() {
  echo "$SCRIPT_NAME: $*" >&2
}

# quote ARG...: the arguments as one line of POSIX shell words, quoted like Python's shlex.quote
# except that in --flag=VALUE only VALUE is quoted (--command='...' rather than '--command=...').
quote() {
  local safe='^[A-Za-z0-9_@%+=:,./-]+$' flag='^(--?[A-Za-z0-9_.-]+=)(.*)$' sq="'" esc="'\\''"
  local arg prefix out=()
  for arg in "$@"; do
    prefix=""
    if [[ $arg =~ $safe ]]; then
      out+=("$arg")
      continue
    elif [[ $arg =~ $flag ]]; then
      prefix=${BASH_REMATCH[1]}
      arg=${BASH_REMATCH[2]}
    fi
    out+=("$prefix'${arg//$sq/$esc}'")
  done
  local IFS=' '
  printf '%s' "${out[*]-}"
}

# run CMD...: with --dry-run print the command on stdout; otherwise echo it to stderr and run it.
run() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(quote "$@")"
  else
    printf '+ %s\n' "$(quote "$@")" >&2
    "$@"
  fi
}

# value_flag NAME VAR METAVAR HELP [DEFAULT]: --NAME=METAVAR sets $VAR (default: $VAR from the
# environment, else DEFAULT).
value_flag() {
  local var=$2
  FLAG_SPECS+=("value|$1|$var|$3|$4")
  if [[ -z ${!var:-} ]]; then
    printf -v "$var" '%s' "${5:-}"
  fi
}

# switch_flag NAME VAR HELP: --NAME sets $VAR to 1 (it starts at 0, whatever the environment says).
switch_flag() {
  FLAG_SPECS+=("switch|$1|$2||$3")
  printf -v "$2" '%s' 0
}

usage() {
  local spec kind name var meta help left
  printf 'Usage: %s %s%s\n\n%s\n\nOptions:\n' \
    "$SCRIPT_NAME" "$SYNOPSIS" "${AFTER_DASHDASH:+ [-- ARGS...]}" "$USAGE"
  for spec in ${FLAG_SPECS[@]+"${FLAG_SPECS[@]}"}; do
    IFS='|' read -r kind name var meta help <<<"$spec"
    if [[ $kind == value ]]; then
      left="--$name=$meta"
      help="$help [\$$var${!var:+, default ${!var}}]"
    else
      left="--$name"
    fi
    if ((${#left} > 28)); then
      printf '  %s\n  %-28s %s\n' "$left" "" "$help"
    else
      printf '  %-28s %s\n' "$left" "$help"
    fi
  done
  printf '  %-28s %s\n' "--dry-run" "print the commands instead of running them" \
    "-h, --help" "show this help"
  if [[ -n $AFTER_DASHDASH ]]; then
    printf '  %-28s %s\n' "-- ARGS..." "$AFTER_DASHDASH"
  fi
}

# parse_flags "$@": sets the declared variables, DRY_RUN and EXTRA_ARGS; exits 2 on a bad argument.
parse_flags() {
  local arg name spec kind fname var meta help matched
  while (($#)); do
    arg=$1
    case $arg in
      -h | --help)
        usage
        exit 0
        ;;
      --dry-run)
        DRY_RUN=1
        shift
        continue
        ;;
      --)
        [[ -n $AFTER_DASHDASH ]] || usage_error "unexpected argument: --"
        shift
        EXTRA_ARGS+=("$@")
        return 0
        ;;
    esac
    matched=0
    if [[ $arg == --?* ]]; then
      name=${arg#--}
      name=${name%%=*}
      for spec in ${FLAG_SPECS[@]+"${FLAG_SPECS[@]}"}; do
        IFS='|' read -r kind fname var meta help <<<"$spec"
        [[ $fname == "$name" ]] || continue
        matched=1
        if [[ $kind == switch ]]; then
          [[ $arg != *=* ]] || usage_error "--$name takes no value"
          printf -v "$var" '%s' 1
        elif [[ $arg == *=* ]]; then
          printf -v "$var" '%s' "${arg#*=}"
        else
          [[ $# -ge 2 && $2 != -* ]] || usage_error "--$name needs a value (--$name=$meta)"
          printf -v "$var" '%s' "$2"
          shift
        fi
        break
      done
    fi
    if ((!matched)); then
      # shellcheck disable=SC2053  # ACCEPT_EXTRA is a pattern on purpose
      if [[ -n $ACCEPT_EXTRA && $arg == $ACCEPT_EXTRA ]]; then
        EXTRA_ARGS+=("$arg")
      else
        usage_error "unknown argument: $arg${EXTRA_HINT:+ ($EXTRA_HINT)}"
      fi
    fi
    shift
  done
}

# require_flags NAME...: exit 2 naming every listed flag that is still empty.
require_flags() {
  local want spec kind name var meta help missing=()
  for want in "$@"; do
    for spec in "${FLAG_SPECS[@]}"; do
      IFS='|' read -r kind name var meta help <<<"$spec"
      if [[ $name == "$want" && -z ${!var:-} ]]; then
        missing+=("--$name (or \$$var)")
      fi
    done
  done
  if ((${#missing[@]})); then
    local IFS=,
    usage_error "missing required flag(s):${missing[*]/#/ }"
  fi
}

# --- Cloud TPU ---------------------------------------------------------------------------------

# tpu_flags: the flags every tpu_*.sh script takes.
tpu_flags() {
  value_flag name TPU_NAME NAME "TPU VM (and queued resource) name"
  value_flag zone ZONE ZONE "zone, e.g. us-central2-b (v4), us-west4-a (v5e)"
  value_flag project PROJECT_ID PROJECT "Google Cloud project (default: gcloud's configured one)"
}

# remote_dir_flag: where the repository lives on each worker.
remote_dir_flag() {
  value_flag remote-dir REMOTE_DIR DIR "repository directory on the workers, relative to home" \
    stackgan-jax
}

# gcloud_scope: SCOPE=(--zone=... [--project=...]) for every gcloud call.
gcloud_scope() {
  SCOPE=(--zone="$ZONE")
  if [[ -n $PROJECT_ID ]]; then
    SCOPE+=(--project="$PROJECT_ID")
  fi
}

# tpu_ssh WORKER COMMAND: run a shell command on one worker, or on all of them at once ("all").
# Newlines in COMMAND become spaces (write it over several lines; end statements with ;).
tpu_ssh() {
  local newline=$'\n'
  gcloud_scope
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${SCOPE[@]}" --worker="$1" \
    --command="${2//$newline/ }"
}

# --- local runs --------------------------------------------------------------------------------

# local_main NAME=VALUE... -- ARGS...: run `python -m stackgan_jax.main ARGS` from the repository
# root with these environment variables set (the local_*.sh scripts). --dry-run and -h/--help are
# the script's own; every other argument goes to main, and so does all after a first `--` (which
# itself is dropped), e.g. `-- --helpfull` for main's flags.
local_main() {
  local env=() args=()
  while [[ $1 != -- ]]; do
    env+=("$1")
    shift
  done
  shift
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      --)
        shift
        args+=("$@")
        break
        ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  run cd "$REPO_DIR" || exit
  run env "${env[@]}" "${PYTHON:-python3}" -m stackgan_jax.main ${args[@]+"${args[@]}"}
}
