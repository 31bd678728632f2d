# opencode for the tests and benchmarks: the real `opencode-ai` package from
# npm, pinned, installed project-locally into .tools/ (never committed).
#
#   make opencode-tools   install opencode and the plugin seed (idempotent)
#   make test-opencode    run tests/opencode against the real binary
#   make bench-opencode   Galaxy's overhead on top of opencode
#
# `make test` and `make bench` get `opencode-tools` as a prerequisite from here.

OPENCODE_VERSION ?= 1.18.33
OPENCODE_TOOLS := $(CURDIR)/.tools
OPENCODE_BIN := $(OPENCODE_TOOLS)/opencode/node_modules/.bin/opencode
OPENCODE_STAMP := .stamps/opencode-$(OPENCODE_VERSION)

.PHONY: opencode-tools test-opencode bench-opencode

opencode-tools: $(OPENCODE_STAMP)

# node only runs npm and the package's postinstall: opencode itself is a native binary.
# opencode installs @opencode-ai/plugin into its config dir in the background
# unless it is there already: the tests seed that dir from the plugin seed.
$(OPENCODE_STAMP): mk/opencode.mk
	$(call ensure_npm,opencode-tools)
	rm -rf $(OPENCODE_TOOLS)/opencode $(OPENCODE_TOOLS)/opencode-plugin-seed
	mkdir -p $(OPENCODE_TOOLS)/opencode $(OPENCODE_TOOLS)/opencode-plugin-seed
	$(NPM_INSTALL) --prefix $(OPENCODE_TOOLS)/opencode opencode-ai@$(OPENCODE_VERSION)
	$(NPM_INSTALL) --prefix $(OPENCODE_TOOLS)/opencode-plugin-seed @opencode-ai/plugin@$(OPENCODE_VERSION)
	test "$$($(OPENCODE_BIN) --version)" = "$(OPENCODE_VERSION)"
	@mkdir -p .stamps && touch $@

test-opencode: deps opencode-tools
	$(PY) -m pytest $(PYTEST_ARGS) tests/opencode

bench-opencode: deps opencode-tools
	$(PY) bench/bench_opencode.py

test: opencode-tools
bench: opencode-tools
