#!/bin/bash
# One-shot job, as the admin: a SCRAM-SHA-512 credential for each principal whose password compose
# mounts at /run/secrets/scram-<user>, then the ACLs generated from the event catalogue
# (contracts/kafka-acls.txt, mounted at /opt/cairn/kafka-acls.txt). Both steps are idempotent, so
# the job runs again on every `docker compose up`.
set -euo pipefail
: "${BOOTSTRAP:?set BOOTSTRAP to the Kafka bootstrap servers}"

password="$(tr -d '\r\n' < /run/secrets/kafka_admin_password)"
work="$(mktemp -d)"
cd "$work"
umask 077
cat > admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$password";
PROPERTIES

for file in /run/secrets/scram-*; do
  user="${file#/run/secrets/scram-}"
  secret="$(tr -d '\r\n' < "$file")"
  if [[ -z "$secret" ]]; then
    echo "$file is empty: run infra/secrets/create.sh" >&2
    exit 1
  fi
  /opt/kafka/bin/kafka-configs.sh --bootstrap-server "$BOOTSTRAP" \
    --command-config admin.properties --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$secret]" >/dev/null
  echo "SCRAM-SHA-512 credential: $user"
done

# contracts/kafka-acls.txt calls `kafka-acls` (Confluent's name); this image ships kafka-acls.sh.
mkdir bin
ln -s /opt/kafka/bin/kafka-acls.sh bin/kafka-acls
PATH="$work/bin:$PATH" sh /opt/cairn/kafka-acls.txt >/dev/null
echo "applied $(grep -c '^kafka-acls ' /opt/cairn/kafka-acls.txt) ACL commands"
