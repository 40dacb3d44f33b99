#!/usr/bin/env bash
# Installs what the build, the main job and the tests need on a fresh Debian/Ubuntu machine,
# when it is missing:
#   cmake, nasm            build the vendored libjpeg-turbo (turbojpeg-sys) with its SIMD code
#   dataset-fashion-mnist  the real images of the smoke job and the data tests (70,000, MIT)
#   mesa-vulkan-drivers    lavapipe, a Vulkan device on the CPU: the wgpu (software GPU) tests
# Uses sudo when not root. Elsewhere it says, in one line, what to install.
set -euo pipefail

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found: install the Rust toolchain first (https://rustup.rs)" >&2
    exit 1
fi

packages=()
command -v cmake >/dev/null || packages+=(cmake)
command -v nasm >/dev/null || packages+=(nasm)
if [ -z "${MAXXVIT_FASHION_MNIST_DIR:-}" ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    packages+=(dataset-fashion-mnist)
fi
# lavapipe's ICD file; a machine with a real Vulkan driver needs nothing more.
if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 && ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    packages+=(mesa-vulkan-drivers)
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    packages+=(libvulkan1)
fi

if [ ${#packages[@]} -eq 0 ]; then
    echo "setup: everything needed is installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "setup: not a Debian/Ubuntu machine: install ${packages[*]} (or their equivalents: cmake, nasm, a Vulkan driver; Fashion-MNIST's IDX files in \$MAXXVIT_FASHION_MNIST_DIR) and run again" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
        echo "setup: not root and no sudo: as root, run: apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
    SUDO="sudo"
fi
echo "setup: installing ${packages[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
echo "setup: done"
