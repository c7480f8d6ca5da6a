#!/usr/bin/env bats
# The README and docs/: links that resolve, and a front door that names every tool.

load helpers/common

@test "every relative link in README.md, docs/ and models/ resolves, anchors included" {
    cd "$ROOT"
    run "$PY" "$HELPERS/links.py" README.md docs/*.md models/README.md
    assert_success
    assert_output ""
    # the checker itself finds a broken link and a broken anchor
    printf '# A heading\n[a](%s) [b](%s) [c](%s)\n' nowhere.md bad.md#no-such-heading '#a-heading' > "$T/bad.md"
    run "$PY" "$HELPERS/links.py" "$T/bad.md"
    assert_failure
    assert_line --partial "nowhere.md: no such file"
    assert_line --partial "bad.md#no-such-heading: no heading makes #no-such-heading"
    refute_output --partial "#a-heading"
}

@test "the README names every tool, pipeline and man page" {
    cd "$ROOT"
    for tool in $(sed -n 's/^TOOLS *:= *//p' Makefile) $(ls pipelines); do
        grep -q "\`$tool\`\|pipelines/$tool" README.md || fail "README.md does not name $tool"
    done
    for page in man/*; do
        name=$(basename "$page")
        grep -q "$name" README.md || fail "README.md does not name the man page $name"
    done
}

@test "the README stays a front door: at most about 250 lines" {
    [ "$(wc -l < "$ROOT/README.md")" -le 260 ]
}
