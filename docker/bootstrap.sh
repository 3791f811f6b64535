#!/usr/bin/env bash
# Sets up everything idsync's tests and demo need on a fresh Debian 12 machine; safe to run again.
#   1. Debian packages: slapd + ldap-utils and a Samba AD DC (without Debian's own slapd or samba
#      services left running), PostgreSQL (without Debian's own cluster running), a JRE and Maven.
#   2. The Python venv .venv with idsync installed editable, with its test extras.
#   3. The Kafka broker's jars and Kafka's command-line tools (kafka-tools), in the cache directory
#      idsync/rig/kafka.py reads them from.
# Usage, as root, from anywhere in the repo: bash docker/bootstrap.sh
set -euo pipefail

KAFKA_VERSION=3.9.2
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/idsync/kafka-$KAFKA_VERSION
KAFKA_POM=$REPO_ROOT/docker/kafka/pom.xml
VENV=$REPO_ROOT/.venv
PYTHON=${PYTHON:-python3}

say() { echo "bootstrap: $*"; }
die() { echo "bootstrap: error: $*" >&2; exit 1; }
trap 'echo "bootstrap: error: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

# Runs a command with its output held back, and shows that output only if the command fails.
quietly() {
    local log status=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || status=$?
    if (( status != 0 )); then
        cat "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}

# The script finds the repo from its own path: a copy run from elsewhere must not set up a venv there.
[[ -f $REPO_ROOT/pyproject.toml && -f $KAFKA_POM ]] || die "run the script inside the idsync repo (docker/bootstrap.sh)"
cd "$REPO_ROOT"

# --- 1. Debian packages -----------------------------------------------------------------------------

missing_packages=()
dpkg-query -W -f='${Status}' slapd 2>/dev/null | grep -q 'ok installed' || missing_packages+=(slapd)
dpkg-query -W -f='${Status}' ldap-utils 2>/dev/null | grep -q 'ok installed' || missing_packages+=(ldap-utils)
# The Active Directory forests of the tests: samba-ad-dc brings samba (the DC binary, samba-tool),
# winbind and the DSDB modules; samba-ad-provision the templates `samba-tool domain provision` reads.
samba_packages=(samba-ad-dc samba-ad-provision)
for package in "${samba_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing_packages+=("$package")
done
# PostgreSQL for the site stores of the tests: idsync/rig/postgres.py starts its own clusters.
dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'ok installed' || missing_packages+=(postgresql)
command -v java >/dev/null || missing_packages+=(default-jre-headless)
command -v mvn >/dev/null || missing_packages+=(maven)
# The status page test opens the page in headless Chromium.
command -v chromium >/dev/null || missing_packages+=(chromium)
if [[ ! -x $VENV/bin/python ]] && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    missing_packages+=(python3-venv)
fi

# Debian's slapd package would start a server of its own on port 389 with a generated database;
# the rig runs its own instances, so keep that one from ever running.
stop_debian_slapd() {
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now slapd >/dev/null 2>&1 || true
    fi
    local pidfile=/run/slapd/slapd.pid
    if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "stopping Debian's default slapd (pid $(cat "$pidfile"))"
        kill "$(cat "$pidfile")"
    fi
}

# The samba packages ship services (an AD DC or file server on the standard ports, winbindd) that
# would take the addresses the rig's DCs listen on; the rig starts its own DCs, so none may run.
stop_debian_samba() {
    local service pidfile
    if [[ -d /run/systemd/system ]]; then
        for service in samba-ad-dc smbd nmbd winbind; do
            systemctl disable --now "$service" >/dev/null 2>&1 || true
        done
    fi
    for pidfile in /run/samba/samba.pid /run/samba/smbd.pid /run/samba/nmbd.pid /run/samba/winbindd.pid; do
        if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            say "stopping Debian's $(basename "$pidfile" .pid) (pid $(cat "$pidfile"))"
            kill "$(cat "$pidfile")"
        fi
    done
}

# Debian's postgresql package creates a cluster (15/main, port 5432) and a service that starts it;
# the rig runs its own clusters as plain processes, so that one must not run.
stop_debian_postgresql() {
    local pidfile
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now postgresql >/dev/null 2>&1 || true
    fi
    for pidfile in /var/lib/postgresql/*/main/postmaster.pid; do
        if [[ -s $pidfile ]] && kill -0 "$(head -n1 "$pidfile")" 2>/dev/null; then
            say "stopping Debian's PostgreSQL cluster (pid $(head -n1 "$pidfile"))"
            kill -INT "$(head -n1 "$pidfile")"
        fi
    done
}

if (( ${#missing_packages[@]} )); then
    (( EUID == 0 )) || die "installing ${missing_packages[*]} needs root: run as root"
    say "installing ${missing_packages[*]}"
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # 101 = "action forbidden": package scripts may not start services during this install.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    install_status=0
    {
        quietly apt-get update -q &&
            quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing_packages[@]}"
    } || install_status=$?
    if (( created_policy )); then
        rm -f /usr/sbin/policy-rc.d
    fi
    (( install_status == 0 )) || die "apt-get could not install ${missing_packages[*]} (exit $install_status)"
    if [[ " ${missing_packages[*]} " == *" slapd "* ]]; then
        stop_debian_slapd
    fi
    if [[ " ${missing_packages[*]} " == *" samba-ad-dc "* ]]; then
        stop_debian_samba
    fi
    if [[ " ${missing_packages[*]} " == *" postgresql "* ]]; then
        stop_debian_postgresql
    fi
fi

# --- 2. Python venv ---------------------------------------------------------------------------------

if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON"
fi
# Reinstall only when the packaging changed (or the checkout moved).
install_stamp=$VENV/.idsync-installed
wanted_stamp="$(cat pyproject.toml docker/constraints.txt | sha256sum | cut -d' ' -f1) $REPO_ROOT"
if [[ ! -f $install_stamp || $(cat "$install_stamp") != "$wanted_stamp" ]]; then
    say "installing idsync (editable) with test extras into $VENV"
    quietly "$VENV/bin/pip" install --disable-pip-version-check -c docker/constraints.txt -e '.[test]' ||
        die "pip install -e '.[test]' failed (its output is above)"
    echo "$wanted_stamp" >"$install_stamp"
fi

# --- 3. Kafka jars ----------------------------------------------------------------------------------

grep -q "<version>$KAFKA_VERSION</version>" "$KAFKA_POM" ||
    die "$KAFKA_POM does not ask for Kafka $KAFKA_VERSION; update KAFKA_VERSION here and in idsync/rig/kafka.py"
# The marker holds the pom's hash: a changed pom fetches again, an unchanged one never does.
marker=$KAFKA_CACHE/libs.complete
pom_hash=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
if [[ ! -f $marker || $(cat "$marker") != "$pom_hash" ]]; then
    say "fetching Kafka $KAFKA_VERSION jars into $KAFKA_CACHE/libs"
    mkdir -p "$KAFKA_CACHE"
    rm -rf "$KAFKA_CACHE/libs.tmp" "$KAFKA_CACHE/libs.old"
    quietly mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$KAFKA_CACHE/libs.tmp" ||
        die "maven could not fetch the Kafka jars (its output is above)"
    for jar in kafka_2.13 kafka-tools; do
        ls "$KAFKA_CACHE/libs.tmp/$jar-$KAFKA_VERSION.jar" >/dev/null ||
            die "maven finished but $jar-$KAFKA_VERSION.jar is missing from $KAFKA_CACHE/libs.tmp"
    done
    # Swap directories rather than overwrite in place: a broker may be starting from the old jars.
    if [[ -d $KAFKA_CACHE/libs ]]; then
        mv "$KAFKA_CACHE/libs" "$KAFKA_CACHE/libs.old"
    fi
    mv "$KAFKA_CACHE/libs.tmp" "$KAFKA_CACHE/libs"
    rm -rf "$KAFKA_CACHE/libs.old"
    echo "$pom_hash" >"$marker"
fi

say "ready: slapd $(dpkg-query -W -f='${Version}' slapd), Kafka $KAFKA_VERSION jars in $KAFKA_CACHE/libs, venv $VENV"
