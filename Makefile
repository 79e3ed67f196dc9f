# The pen appliance. `make test` is the test command CI runs.
GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
STATICCHECK ?= $(GOBIN)/staticcheck
FUZZTIME  ?= 10s
BOARD     ?= pc
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
MODULE    := github.com/pen-lb/pen-appliance
LDFLAGS   := -X github.com/pen-lb/pen-appliance/pen/version.Version=$(VERSION)

.PHONY: all build test check fmt-check vet staticcheck unit fuzz bench run image vm deps clean

all: build

## build: pen, penctl and penimage into bin/
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./pen/cmd/pen ./pen/cmd/penctl ./pen/cmd/pendemo ./image/cmd/penimage

## deps: install the Debian packages and Go tools the tests need
deps:
	scripts/deps.sh

## test: formatting, vet, staticcheck, every test (with -race but for the qemu boots), then a short fuzz run of every fuzz target
test: build check unit fuzz

check: fmt-check vet staticcheck

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null; git ls-files -o --exclude-standard '*.go' 2>/dev/null))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

# The image builder's tests boot qemu (software emulation) and spend their
# time there and in writing file systems; the race detector finds nothing in
# them and makes the writers several times slower, so those two packages run
# without it. Everything else runs with -race.
VM_PKGS := ./image ./image/cmd/penimage
unit:
	$(GO) test -race -timeout 35m $$($(GO) list ./... | grep -v -x -e '$(MODULE)/image' -e '$(MODULE)/image/cmd/penimage')
	$(GO) test -timeout 35m $(VM_PKGS)

## fuzz: every fuzz target for FUZZTIME each (seed corpora live in testdata/fuzz)
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

## bench: proxy vs direct vs HAProxy, as ratios, in one run
bench: build
	scripts/bench.sh

## run: pen on 127.0.0.1:8080 in front of two demo backends
run: build
	bin/pendemo

## image: a disk image for BOARD (pc, rpi, arm64) in images/; IMAGE_FLAGS adds
## penimage flags, e.g. IMAGE_FLAGS="-hostname lb1 -config my.cfg -size 8G"
image: build
	bin/penimage build -board $(BOARD) -o images/pen-$(BOARD).img $(IMAGE_FLAGS)

## vm: build the pc image and boot it in qemu (see docs/APPLIANCE.md)
vm: build
	scripts/vm.sh

clean:
	rm -rf bin images out
