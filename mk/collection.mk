# The Ansible collection galaxy_protocol.fleet (this repository's root).
# `make collection-test` runs its unit tests, gates and Molecule scenario;
# `make test` runs them too (tests/unit, tests/collection).
GALAXY_COLLECTIONS := $(CURDIR)/artifacts/collections
# ansible-playbook finds galaxy_protocol.fleet in this checkout through a link.
GALAXY_ANSIBLE_ENV := ANSIBLE_COLLECTIONS_PATH=$(GALAXY_COLLECTIONS) ANSIBLE_PIPELINING=1 ANSIBLE_RETRY_FILES_ENABLED=0

.PHONY: collection-link collection-build collection-test collection-lint molecule

collection-link:
	@mkdir -p $(GALAXY_COLLECTIONS)/ansible_collections/galaxy_protocol
	@ln -sfn $(CURDIR) $(GALAXY_COLLECTIONS)/ansible_collections/galaxy_protocol/fleet
	@echo "export ANSIBLE_COLLECTIONS_PATH=$(GALAXY_COLLECTIONS)"

collection-build: deps
	$(VENV)/bin/ansible-galaxy collection build --force --output-path artifacts/dist .

collection-lint: deps
	$(PY) -m pytest $(PYTEST_ARGS) tests/collection/test_gates.py tests/collection/test_argument_specs.py

collection-test: deps
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit tests/collection

molecule: deps collection-link
	cd $(CURDIR) && $(VENV)/bin/molecule test
