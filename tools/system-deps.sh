#!/usr/bin/env bash
# Debian packages the toolkit needs at run time and in tests (none for the base install:
# reward models and PPO need no system package):
#   libegl1 libegl-mesa0 libgl1-mesa-dri  MuJoCo offscreen rendering, [robot] extra (MUJOCO_GL=egl, Mesa on the CPU)
#   libosmesa6                            the alternative backend (MUJOCO_GL=osmesa)
#   chromium                              the labelling app's browser tests, [dev] (Playwright drives /usr/bin/chromium)
# Installs what is missing when run as root; otherwise says which packages to install.
set -euo pipefail
packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
