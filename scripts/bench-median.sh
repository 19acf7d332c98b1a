#!/usr/bin/env bash
# Passes `go test -bench -count N` output through and then prints, for every
# benchmark and metric, the median of its runs and their range, so that a
# figure is reported with its spread rather than as the best run.
set -euo pipefail
tee /dev/stderr | awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	if (!(name in seen)) { seen[name] = 1; order[++names] = name }
	for (i = 3; i + 1 <= NF; i += 2) {
		unit = $(i + 1); if (unit == "ns/op" && $i == 0) continue
		k = name SUBSEP unit
		if (!(k in count)) { units[name] = units[name] " " unit }
		vals[k, ++count[k]] = $i
	}
}
END {
	if (names == 0) exit 1
	print "\nmedian [min .. max] of the runs:"
	for (n = 1; n <= names; n++) {
		name = order[n]; line = sprintf("%-36s", name)
		split(substr(units[name], 2), us, " ")
		for (u = 1; u in us; u++) {
			k = name SUBSEP us[u]; c = count[k]
			for (i = 1; i <= c; i++) v[i] = vals[k, i] + 0
			for (i = 2; i <= c; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
			med = (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
			line = line sprintf("  %s %.4g [%.4g .. %.4g] (%d runs)", us[u], med, v[1], v[c], c)
		}
		print line
	}
}'
