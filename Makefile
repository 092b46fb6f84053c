# The one entry point. `make` builds; `make test`, `make demo` and
# `make bench` install what they need first (scripts/deps.sh).
SHELL := /bin/bash

NGINX_SRC  ?= /usr/share/nginx/src
BUILD      ?= $(CURDIR)/build
NGX_BUILD  := $(BUILD)/nginx
CMAKE_BUILD := $(BUILD)/cmake
MODULE_SO  := $(NGX_BUILD)/objs/ngx_session_module.so
JOBS       ?= $(shell nproc)

PREFIX     ?= /usr
DESTDIR    ?=
NGINX_MODULES_DIR ?= $(PREFIX)/lib/nginx/modules
EXAMPLES_DIR ?= $(PREFIX)/share/doc/ngx-session-module/examples
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
SYSUSERS_DIR ?= $(PREFIX)/lib/sysusers.d

.PHONY: all deps module cmake unit test demo demo-stop bench fuzz install format clean

all: module cmake

deps:
	@scripts/deps.sh

# nginx builds dynamic modules from its own configured tree: a copy of the
# distribution's tree, configured with the distribution's exact flags, so
# that the stock /usr/sbin/nginx accepts the module's signature.
$(NGX_BUILD)/objs/Makefile: config $(NGINX_SRC)/conf_flags
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && source ./conf_flags && \
	  ./configure "$${NGX_CONF_FLAGS[@]}" --add-dynamic-module=$(CURDIR) \
	  > $(BUILD)/nginx-configure.log 2>&1 || { tail -30 $(BUILD)/nginx-configure.log; exit 1; }

module: $(NGX_BUILD)/objs/Makefile
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile -j$(JOBS) modules
	@echo "built $(MODULE_SO)"

$(CMAKE_BUILD)/CMakeCache.txt: CMakeLists.txt
	cmake -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DSESSION_MODULE_SO=$(MODULE_SO) > /dev/null

cmake: $(CMAKE_BUILD)/CMakeCache.txt
	cmake --build $(CMAKE_BUILD) -j$(JOBS)

unit: deps cmake
	cd $(CMAKE_BUILD) && ctest --output-on-failure -L unit

test: deps all
	cd $(CMAKE_BUILD) && ctest --output-on-failure --timeout 900

demo: deps all
	scripts/demo.sh start

demo-stop:
	scripts/demo.sh stop

bench: deps all
	bench/run.sh
	bench/redis_floor.sh
	bench/cache_revocation.py $(MODULE_SO)
	bench/syncd/run.sh
	OLD_SYNCD_BIN=none bench/syncd/reconcile.sh

fuzz: deps
	cmake -S . -B $(BUILD)/fuzz -DCMAKE_CXX_COMPILER=clang++-14 \
	  -DCMAKE_C_COMPILER=clang-14 -DSESSION_FUZZ=ON > /dev/null
	cmake --build $(BUILD)/fuzz -j$(JOBS) --target fuzzers
	tests/fuzz/run.sh $(BUILD)/fuzz $${FUZZ_SECONDS:-60}

# The unit runs /usr/bin/syncd: keep PREFIX=/usr when installing it for systemd.
install: all
	install -d $(DESTDIR)$(NGINX_MODULES_DIR) $(DESTDIR)$(EXAMPLES_DIR) \
	  $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)$(SYSUSERS_DIR)
	install -m 0644 $(MODULE_SO) $(DESTDIR)$(NGINX_MODULES_DIR)/
	install -m 0644 nginx.conf.example $(DESTDIR)$(EXAMPLES_DIR)/
	install -m 0755 $(CMAKE_BUILD)/syncd/syncd $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 syncd/syncd.service $(DESTDIR)$(SYSTEMD_UNIT_DIR)/
	install -m 0644 syncd/syncd.sysusers $(DESTDIR)$(SYSUSERS_DIR)/syncd.conf
	install -m 0644 syncd/syncd.env.example $(DESTDIR)$(EXAMPLES_DIR)/

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf $(BUILD)
