#!/bin/sh
# Creates every secret file docker-compose.yml names under infra/secrets/, once: a file that
# exists and is not empty is kept, so running this again never rotates a secret by accident.
# See README.md next to this script. POSIX sh; needs only /dev/urandom, tr, head and base64.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
compose="$here/../../docker-compose.yml"
chmod 700 "$here"

random_text() { # $1 characters of [A-Za-z0-9]
  LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"
}

value_for() {
  case "$1" in
    platform.key) # a Fernet key: 32 random bytes, URL-safe base64
      head -c 32 /dev/urandom | base64 | tr '+/' '-_' ;;
    admin-token) # `<key_id>:<secret>` of the bootstrap admin key (CKIA + 16 of [A-Z0-9])
      printf 'CKIA%s:%s' "$(LC_ALL=C tr -dc 'A-Z0-9' </dev/urandom | head -c 16)" "$(random_text 40)" ;;
    *.password)
      random_text 32 ;;
    *)
      echo "no rule to create $1" >&2
      exit 1 ;;
  esac
}

# The files the top-level `secrets:` of docker-compose.yml name (`file: ./infra/secrets/<name>`).
names="$(sed -n 's|^ *file: *\./infra/secrets/\([A-Za-z0-9._-]*\) *$|\1|p' "$compose" | sort -u)"
for name in $names; do
  path="$here/$name"
  if [ -s "$path" ]; then
    echo "kept    infra/secrets/$name"
    continue
  fi
  value="$(value_for "$name")"
  printf '%s\n' "$value" >"$path"
  # Compose bind-mounts the file itself: the containers' users (Cairn 10001, Kafka 1000) must
  # read it; the folder (0700) keeps other users of this host out.
  chmod 644 "$path"
  echo "created infra/secrets/$name"
done
