#!/bin/sh
# Install the Debian packages named in $DEBS that are missing. As root it runs
# apt-get; otherwise it prints the command to run and fails.
set -u
missing=""
for pkg in $DEBS; do
  dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "pgpool: missing Debian packages; run as root:" >&2
  echo "  apt-get install -y$missing" >&2
  exit 1
fi
echo "pgpool: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || echo "pgpool: apt-get update failed; trying the install anyway" >&2
apt-get install -y -qq --no-install-recommends$missing >/dev/null || {
  echo "pgpool: could not install:$missing" >&2
  exit 1
}
