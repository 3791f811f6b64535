#!/bin/sh
# Renders slapd.conf.template for one forest and runs slapd in the foreground.
#   LDAP_SUFFIX                  the forest's suffix, e.g. dc=central,dc=idsync,dc=test (its first RDN is dc=)
#   LDAP_ADMIN_PASSWORD_FILE     file holding cn=admin,<suffix>'s password (a Docker secret)
# The config holds only the password's {SSHA} hash; the base entry is made on the first start.
set -eu

: "${LDAP_SUFFIX:?set LDAP_SUFFIX, e.g. dc=central,dc=idsync,dc=test}"
: "${LDAP_ADMIN_PASSWORD_FILE:?set LDAP_ADMIN_PASSWORD_FILE to the admin password's file}"
[ -r "$LDAP_ADMIN_PASSWORD_FILE" ] || { echo "idsync-slapd: cannot read $LDAP_ADMIN_PASSWORD_FILE" >&2; exit 1; }

home=${SLAPD_HOME:-/var/lib/idsync-slapd}
conf_dir=${SLAPD_CONF_DIR:-/etc/ldap/idsync}
listen=${SLAPD_URLS:-ldap:///}
admin_dn="cn=admin,$LDAP_SUFFIX"
base_dc=$(printf '%s' "${LDAP_SUFFIX%%,*}" | sed 's/^[dD][cC]=//')
mkdir -p "$home/run" "$home/data" "$home/accesslog"

# Like idsync's password files: one trailing newline is not part of the password.
hash=$(printf '%s' "$(cat "$LDAP_ADMIN_PASSWORD_FILE")" | slappasswd -T /dev/stdin)
# '|' appears in none of the values (paths, a DN, base64).
sed -e "s|\${schema_dir}|$conf_dir|g" \
    -e "s|\${run_dir}|$home/run|g" \
    -e "s|\${data_dir}|$home/data|g" \
    -e "s|\${accesslog_dir}|$home/accesslog|g" \
    -e "s|\${suffix}|$LDAP_SUFFIX|g" \
    -e "s|\${admin_dn}|$admin_dn|g" \
    -e "s|\${admin_password_hash}|$hash|g" \
    -e "s|\${tls_config}|# no TLS inside the compose network|g" \
    "$conf_dir/slapd.conf.template" >"$home/slapd.conf"
chmod 600 "$home/slapd.conf"

if [ ! -e "$home/data/data.mdb" ]; then
    printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: %s\no: %s\n' \
        "$LDAP_SUFFIX" "$base_dc" "$base_dc" | slapadd -f "$home/slapd.conf" -b "$LDAP_SUFFIX"
    echo "idsync-slapd: base entry $LDAP_SUFFIX created"
fi

if [ "$(id -u)" = 0 ]; then
    chown -R openldap:openldap "$home"
    exec slapd -f "$home/slapd.conf" -h "$listen" -u openldap -g openldap -d "${SLAPD_LOG_LEVEL:-none}"
fi
exec slapd -f "$home/slapd.conf" -h "$listen" -d "${SLAPD_LOG_LEVEL:-none}"
