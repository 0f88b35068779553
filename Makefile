# Relay — two commands on a fresh machine:  make run   and   make test
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECEIVER_PORT ?= 9000

.PHONY: run test lint bench kafka-up kafka-down kafka-status pg-up pg-down venv clean

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

kafka-up:
	deploy/kafka/kafka.sh up

kafka-down:
	deploy/kafka/kafka.sh down

kafka-status:
	deploy/kafka/kafka.sh status

## make run: venv + deps, local Kafka, SQLite store, the relay and a verifying demo receiver.
## Ctrl-C stops the demo, the receiver, and the broker if this command started it.
## Ports: RELAY_API_LISTEN=127.0.0.1:8081 and RECEIVER_PORT=9100 move the API and the demo receiver.
run: $(STAMP)
	@trap '' INT; started=0; \
	deploy/kafka/kafka.sh status >/dev/null 2>&1 || { deploy/kafka/kafka.sh up && started=1; }; \
	$(BIN)/relay demo --receiver-port $(RECEIVER_PORT); rc=$$?; \
	if [ $$started = 1 ]; then deploy/kafka/kafka.sh down; fi; exit $$rc

## make test: the whole suite on a real broker, once on SQLite and once on PostgreSQL (the test
## session starts a broker and a PostgreSQL server from Debian's packages unless
## RELAY_KAFKA_BOOTSTRAP / RELAY_TEST_POSTGRES_URL name running ones).
test: $(STAMP)
	deploy/kafka/kafka.sh fetch
	$(BIN)/ruff check relay tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider
	RELAY_TEST_STORE=postgres $(BIN)/pytest -q -p no:cacheprovider --ignore=tests/integration/test_scale_out.py \
		--deselect tests/integration/test_store_faults.py::test_a_postgres_outage_loses_nothing_and_is_visible

lint: $(STAMP)
	$(BIN)/ruff check relay tests bench
	$(BIN)/mypy

bench: $(STAMP) kafka-up
	$(BIN)/python -m bench.run

pg-up:
	deploy/postgres/pg.sh up

pg-down:
	deploy/postgres/pg.sh down

clean:
	rm -rf $(VENV) .relay deploy/kafka/lib
