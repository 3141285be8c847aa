#!/bin/sh
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}" KAFKA_LOG4J_CONFIG=/opt/kafka/config/log4j2.properties \
  exec "$(dirname "$0")/kafka-run-class.sh" kafka.Kafka "$@"
