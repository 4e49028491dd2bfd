# shellcheck shell=bash
# Which Compose the bundle's test and bench drive. Sourced by tests/compose/e2e.sh and
# scripts/bench-bundle.
#
#   pick_compose [v1|v2]
#
# v1: docker-compose 1.x; v2: `docker compose`, the Docker CLI plugin (tests/compose/compose-v2
# provides one through DOCKER_CONFIG); no argument: v2 when present, else v1. Sets compose_cmd (an
# array), compose_version ("docker-compose 1.29.2", "Compose 5.6.1") and compose_flavour (v1 or
# v2: the two print different messages); prints why and returns 1 when the one asked for is missing.
pick_compose() {
  local want="${1:-}" version=""
  case "$want" in
    "" | v1 | v2) ;;
    *) echo "unknown Compose '$want': v1 or v2" >&2; return 1 ;;
  esac
  compose_cmd=()
  if [ "$want" != v1 ] && version="$(docker compose version --short 2>/dev/null)"; then
    compose_cmd=(docker compose)
    compose_version="Compose ${version#v}"
  elif [ "$want" != v2 ] && command -v docker-compose >/dev/null 2>&1; then
    version="$(docker-compose version --short)"
    compose_cmd=(docker-compose)
    compose_version="docker-compose ${version#v}"
  else
    case "$want" in
      v1) echo "docker-compose (Compose v1) is not installed" >&2 ;;
      v2) echo "'docker compose' (Compose v2) does not answer: tests/compose/compose-v2 provides it" >&2 ;;
      *) echo "neither 'docker compose' nor 'docker-compose' answers" >&2 ;;
    esac
    return 1
  fi
  if [[ "${version#v}" == 1.* ]]; then compose_flavour=v1; else compose_flavour=v2; fi
  if [ -n "$want" ] && [ "$want" != "$compose_flavour" ]; then
    echo "Compose $want asked for, but ${compose_cmd[*]} is $compose_version" >&2
    return 1
  fi
}
