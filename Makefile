# Picture: `make dev` runs the local stack, `make test` tests everything.
SHELL := /bin/bash
VENV ?= $(HOME)/.cache/picture-venv
PORT ?= 3006
export PORT
DEV_TOOL := target/debug/picture-dev
# Runs a command with the local stack's settings.
WITH_ENV := set -a && . ./.dev/local.env && set +a &&
# The same with the tests' own database and bucket: nothing but `make dev` writes into the dev store.
WITH_TEST_ENV := $(WITH_ENV) export DATABASE_URL=$$TEST_DATABASE_URL IMAGES_BUCKET=$$TEST_IMAGES_BUCKET &&

.PHONY: dev stop test token credits reconcile retry-captures migrate build-dev fuzz audit soak usage backfill-thumbnails

## dev: start the background services, migrate, seed, serve every function on 127.0.0.1:$(PORT)
dev: build-dev
	bash infra/scripts/stack.sh up
	@[ -s .dev/docs/index.html ] || bash infra/scripts/e2e.sh docs || echo "dev: /docs not built (make docs)"
	$(WITH_ENV) $(DEV_TOOL) migrate && $(DEV_TOOL) setup
	$(WITH_ENV) exec $(DEV_TOOL) serve

## stop: stop the background services started by dev/test
stop:
	bash infra/scripts/stack.sh down

build-dev:
	cargo build -q -p picture-dev

## migrate: apply pending migrations to DATABASE_URL (local: .dev/local.env)
migrate: build-dev
	@[ -f .dev/local.env ] || bash infra/scripts/stack.sh up
	$(WITH_ENV) $(if $(DATABASE_URL),DATABASE_URL='$(DATABASE_URL)') $(DEV_TOOL) migrate

## token USER_ID=<uuid>: print a token signed by the local dev key (last line)
token: build-dev
	@[ -n "$(USER_ID)" ] || { echo "usage: make token USER_ID=<uuid>" >&2; exit 2; }
	@[ -f .dev/local.env ] || bash infra/scripts/stack.sh up
	@$(WITH_ENV) $(DEV_TOOL) token $(USER_ID)

## credits USER_ID=<uuid> AMOUNT=<n>: grant credits on the local ledger
credits: build-dev
	@[ -n "$(USER_ID)" ] && [ -n "$(AMOUNT)" ] || { echo "usage: make credits USER_ID=<uuid> AMOUNT=<n>" >&2; exit 2; }
	@[ -f .dev/local.env ] || bash infra/scripts/stack.sh up
	@$(WITH_ENV) $(DEV_TOOL) credits $(USER_ID) $(AMOUNT)

## reconcile: one reconciler run against the local stack (finish lost webhooks, time out stuck generations)
reconcile: build-dev
	@$(WITH_ENV) $(DEV_TOOL) reconcile

## retry-captures: send external credit captures that have not gone through
retry-captures: build-dev
	@$(WITH_ENV) $(DEV_TOOL) retry-captures

## audit [SINCE=<date|RFC3339>] [USER_ID=<uuid>]: check the stores' invariants; exit 1 on any violation
audit: build-dev
	@[ -f .dev/local.env ] || bash infra/scripts/stack.sh up
	@# On a machine where `make dev` never ran, the dev store is made first (empty: nothing to report).
	@$(WITH_ENV) $(DEV_TOOL) migrate >/dev/null && $(DEV_TOOL) setup >/dev/null
	@$(WITH_ENV) $(DEV_TOOL) audit $(if $(SINCE),--since '$(SINCE)') $(if $(USER_ID),--user '$(USER_ID)')

## usage [SINCE=<date|RFC3339>] [UNTIL=<date|RFC3339>] [FORMAT=table|json]: generations, credits, predict time and estimated provider cost per model (default: the last 7 days)
usage: build-dev
	@$(WITH_ENV) $(DEV_TOOL) usage $(if $(SINCE),--since '$(SINCE)') $(if $(UNTIL),--until '$(UNTIL)') $(if $(FORMAT),--format '$(FORMAT)')

## backfill-thumbnails [BATCH=32] [USER_ID=<uuid>] [DATABASE_URL=…]: thumbnails and blurhash for images stored without them (resumable, safe to repeat or run concurrently)
backfill-thumbnails: build-dev
	@$(WITH_ENV) $(if $(DATABASE_URL),DATABASE_URL='$(DATABASE_URL)') $(DEV_TOOL) backfill-thumbnails $(if $(BATCH),--batch '$(BATCH)') $(if $(USER_ID),--user '$(USER_ID)')

## test: unit + integration tests (real PostgreSQL, moto, simulators), simulator tests, template lint
test: build-dev
	bash infra/scripts/stack.sh up
	PATH=$(VENV)/bin:$$PATH AWS_DEFAULT_REGION=eu-central-1 sam validate --lint
	$(WITH_TEST_ENV) $(DEV_TOOL) migrate && $(DEV_TOOL) setup
	$(WITH_TEST_ENV) cargo test --workspace
	$(VENV)/bin/python -m pytest -q --import-mode=importlib infra/replicate-sim infra/stripe-sim infra/moderation-sim

## fuzz: schemathesis against the local stack from docs/openapi.yaml (no 5xx, answers match the document)
fuzz: build-dev
	bash infra/scripts/fuzz.sh

## soak [USERS=50] [DURATION=60] [FAULTS=1]: many users generating through a gateway of its own (:3026), then settle and audit (docs/reliability.md)
soak: build-dev
	bash infra/scripts/soak.sh

.PHONY: e2e docs client

## e2e [E2E_SCREENSHOT=docs/playground.png]: the playground and /docs in Debian's chromium (Playwright), the TypeScript client's freshness, types and example, through a gateway of its own (:3036)
e2e: build-dev
	bash infra/scripts/e2e.sh

## docs: the API reference served at /docs, built from docs/openapi.yaml (Redocly) into .dev/docs/index.html
docs:
	bash infra/scripts/e2e.sh docs

## client: regenerate the TypeScript client's types (clients/typescript/schema.d.ts) from docs/openapi.yaml
client:
	bash infra/scripts/e2e.sh client

# The Lambda functions: one crate and binary per directory of functions/.
FUNCTIONS := $(notdir $(wildcard functions/*))
# The functions that make thumbnails link the decoders (picture's `thumbnails` feature). Cargo
# unifies a crate's features over the packages one invocation builds, so they are built apart.
DECODING := thumbnails reconcile
STORING := $(filter-out $(DECODING),$(FUNCTIONS))

.PHONY: build bench bench-history sam-invoke sam-test

## build: release zips for AWS Lambda (arm64, cargo-lambda + zig), one target/lambda/<function>/bootstrap.zip each
build:
	bash infra/scripts/tools.sh
	@rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	PATH=$(VENV)/bin:$$PATH cargo lambda build --release --arm64 --output-format zip $(addprefix -p ,$(STORING))
	PATH=$(VENV)/bin:$$PATH cargo lambda build --release --arm64 --output-format zip $(addprefix -p ,$(DECODING))
	@for f in $(FUNCTIONS); do stat -c %s target/lambda/$$f/bootstrap.zip | awk -v f=$$f '{printf "%-10s %5.2f MB  target/lambda/%s/bootstrap.zip\n", f, $$1 / 1048576, f}'; done

## bench: cold-start benchmark of x86_64 release builds against the local stack (docs/performance.md); BENCH_ARGS="--warm N --cold N --sync-runs N --only f1,f2"
bench: build-dev
	cargo build --release $(addprefix -p ,$(STORING)) -p bench-hello -p picture-bench
	cargo build --release $(addprefix -p ,$(DECODING)) -p bench-thumbnail
	target/release/picture-bench $(BENCH_ARGS)

## bench-history [PROFILE=release|debug] [RUNS=30]: history at 50,000 generations against 20, in a database of its own (docs/performance.md)
bench-history:
	PROFILE=$(or $(PROFILE),release) RUNS=$(or $(RUNS),30) bash infra/scripts/bench-history.sh

## sam-invoke FUNCTION=<LogicalId> EVENT=<file> [USER_ID=<uuid>]: one `sam local invoke` against the local stack (DEV_TOKEN replaced)
sam-invoke:
	@bash infra/scripts/sam.sh invoke '$(FUNCTION)' '$(EVENT)' '$(USER_ID)'

## sam-test: every sample event through `sam local start-lambda`, the API through `sam local start-api` (podman set up if no Docker)
sam-test:
	@bash infra/scripts/sam.sh test
