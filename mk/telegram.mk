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
TELEGRAM_NPM_INSTALL := npm install --no-audit --no-fund --no-update-notifier --save-exact --loglevel=error

.PHONY: telegram-tools test-bot bench-bot

telegram-tools: $(TELEGRAM_STAMP)

# Debian 12's nodejs 18 + npm 9 run it (express + axios, no native code); a host
# that already has node and npm keeps them.
$(TELEGRAM_STAMP): mk/telegram.mk
	@command -v npm >/dev/null 2>&1 || { \
	  echo "telegram-tools: installing Debian's nodejs and npm"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; }
	rm -rf $(TELEGRAM_TOOLS)
	mkdir -p $(TELEGRAM_TOOLS)
	$(TELEGRAM_NPM_INSTALL) --prefix $(TELEGRAM_TOOLS) telegram-test-api@$(TELEGRAM_TEST_API_VERSION)
	test "$$(node -p 'require("$(TELEGRAM_TOOLS)/node_modules/telegram-test-api/package.json").version')" \
	  = "$(TELEGRAM_TEST_API_VERSION)"
	@mkdir -p .stamps && touch $@

test: telegram-tools

test-bot: deps telegram-tools
	$(PY) -m pytest $(PYTEST_ARGS) tests/bot

bench-bot: deps telegram-tools
	$(PY) bench/bench_bot.py
