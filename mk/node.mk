# Node and npm for the npm-installed test tools (mk/opencode.mk, mk/telegram.mk).
# Debian 12's nodejs 18 + npm 9 are enough; a host that already has node and npm
# (e.g. from NodeSource) keeps them.
NPM_INSTALL := npm install --no-audit --no-fund --no-update-notifier --save-exact --loglevel=error

# $(call ensure_npm,<target name>) in a recipe: install Debian's nodejs and npm if npm is missing.
define ensure_npm
@command -v npm >/dev/null 2>&1 || { \
  echo "$(1): installing Debian's nodejs and npm"; \
  export DEBIAN_FRONTEND=noninteractive; \
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; }
endef
