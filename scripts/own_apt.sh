#!/usr/bin/env bash
# own_apt.sh (sourced by the scripts that fetch Debian packages as data): an apt configuration of our
# own, so that a package's files can be downloaded without touching the system's apt setup or relying on
# its package lists being present. The lines are made from the URIs, Suites and Components the system
# already names (/etc/apt/sources.list.d/*.sources, else /etc/apt/sources.list): no host is named here.
#
#   own_apt_update DIR KIND    # KIND deb or deb-src; writes DIR/sources.list and DIR/lists, runs
#                              # apt-get update with them and leaves the options in OWN_APT_OPTS
#   apt-get "${OWN_APT_OPTS[@]}" download PKG     (or: source --download-only PKG)

# KIND lines from the system's deb entries (deb822 stanzas or one-line entries)
own_apt_lines() {
  local kind=$1 f found=
  # every deb822 file (debian.sources, ubuntu.sources, ...); the one-line sources.list only without
  # them, since a system that has both names the same archives twice (with and without Signed-By)
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    found=1
    awk -v kind="$kind" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && uris != "" && suites != "") {
          n = split(uris, u, " "); m = split(suites, s, " ")
          opt = (signed ~ /^\//) ? " [signed-by=" signed "]" : ""
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print kind opt " " u[i] " " s[j] " " comps
        }
        types = uris = suites = comps = signed = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[^ \t]/ {
        k = tolower($1); sub(/:$/, "", k); $1 = ""; sub(/^[ \t]+/, ""); v = $0
        if (k == "types") types = v; else if (k == "uris") uris = v; else if (k == "suites") suites = v
        else if (k == "components") comps = v; else if (k == "signed-by") signed = v
        else if (k == "enabled" && tolower(v) == "no") types = ""
      }
      END { flush() }
    ' "$f"
  done
  if [[ -z $found && -r /etc/apt/sources.list ]]; then
    sed -n -E "s/^[[:space:]]*deb[[:space:]]+/$kind /p" /etc/apt/sources.list
  fi
}

own_apt_update() {
  local dir=$1 kind=$2 lines log
  lines=$(own_apt_lines "$kind" | sort -u)
  if [[ -z $lines ]]; then
    echo "no deb entries in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list to make $kind lines from" >&2
    return 1
  fi
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/parts"
  printf '%s\n' "$lines" >"$dir/sources.list"
  OWN_APT_OPTS=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=$dir/parts"
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "APT::Get::List-Cleanup=0")
  # as root, apt hands downloads to the _apt user, who cannot enter a cache under /root
  if [[ $(id -u) -eq 0 ]]; then OWN_APT_OPTS+=(-o "APT::Sandbox::User=root"); fi
  log=$(apt-get "${OWN_APT_OPTS[@]}" -q update 2>&1) || {
    echo "$log" >&2
    echo "apt-get update with the list $dir/sources.list failed" >&2
    return 1
  }
}
