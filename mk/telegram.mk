# The Telegram Bot API emulator for the bot's tests and benchmark: the real
# `telegram-test-api` package from npm, pinned, installed project-locally into
# .tools/telegram-test-api (never committed). tests/support/telegram_emulator.py
# runs it on loopback behind a small compatibility proxy (see that file).
#
#   make telegram-tools   install the emulator (idempotent)
#   make test-bot         run tests/bot
#   make bench-bot        order overhead through the bot (bench/bench_bot.py)
#
# `make test` gets telegram-tools as a prerequisite from this file.

TELEGRAM_TEST_API_VERSION ?= 4.2.1
TELEGRAM_TOOLS := $(CURDIR)/.tools/telegram-test-api
TELEGRAM_STAMP := .stamps/telegram-test-api-$(TELEGRAM_TEST_API_VERSION)

.PHONY: telegram-tools test-bot bench-bot

telegram-tools: $(TELEGRAM_STAMP)

# express + axios, no native code: Debian's node runs it (mk/node.mk).
$(TELEGRAM_STAMP): mk/telegram.mk
	$(call ensure_npm,telegram-tools)
	rm -rf $(TELEGRAM_TOOLS)
	mkdir -p $(TELEGRAM_TOOLS)
	$(NPM_INSTALL) --prefix $(TELEGRAM_TOOLS) telegram-test-api@$(TELEGRAM_TEST_API_VERSION)
	test "$$(node -p 'require("$(TELEGRAM_TOOLS)/node_modules/telegram-test-api/package.json").version')" \
	  = "$(TELEGRAM_TEST_API_VERSION)"
	@mkdir -p .stamps && touch $@

test: telegram-tools

test-bot: deps telegram-tools
	$(PY) -m pytest $(PYTEST_ARGS) tests/bot

bench-bot: deps telegram-tools
	$(PY) bench/bench_bot.py
