#!/bin/bash
# Starts the apache/kafka image's own launcher (/etc/kafka/docker/run) with SASL on every listener.
# The admin password comes from a compose secret, never from docker-compose.yml: the admin is the
# only super user and authenticates with PLAIN on the internal and controller listeners (KRaft
# cannot bootstrap a SCRAM credential through the image's storage format step); every Cairn
# service and the user authenticate with SCRAM-SHA-512, created by the kafka-security job.
set -euo pipefail

secret=/run/secrets/kafka_admin_password
password="$(tr -d '\r\n' < "$secret")"
if [[ -z "$password" ]]; then
  echo "$secret is empty: run infra/secrets/create.sh (see infra/secrets/README.md)" >&2
  exit 1
fi

plain="org.apache.kafka.common.security.plain.PlainLoginModule required"
plain="$plain username=\"admin\" password=\"$password\" user_admin=\"$password\";"
scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
# The image turns KAFKA_A_B___C into the property a.b-c (`___` is a dash).
export KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG="$plain"
export KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG="$plain"
export KAFKA_LISTENER_NAME_INTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG="$scram"
export KAFKA_LISTENER_NAME_HOST_SCRAM___SHA___512_SASL_JAAS_CONFIG="$scram"

# The admin's client settings, for the healthcheck (kafka-broker-api-versions.sh).
umask 077
cat > /tmp/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$password";
PROPERTIES

exec /etc/kafka/docker/run
