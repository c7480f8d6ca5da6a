"""Prints every relative link of the Markdown files given that does not resolve: a file
or folder that is not there, or an #anchor that no heading of its target makes (as
GitHub makes them: lower case, punctuation dropped, spaces to hyphens)."""
import os
import re
import sys

LINK = re.compile(r'\]\(([^)\s]+)\)')


def anchors(path):
    out = set()
    with open(path, encoding='utf-8') as f:
        for line in f:
            m = re.match(r'#+\s+(.*)', line)
            if m:
                slug = re.sub(r'[^\w\- ]', '', m.group(1).strip().lower()).replace(' ', '-')
                out.add(slug)
    return out


bad = 0
for md in sys.argv[1:]:
    text = open(md, encoding='utf-8').read()
    for target in LINK.findall(text):
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        full = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
        if not os.path.exists(full):
            print(f'{md}: {target}: no such file')
            bad += 1
        elif anchor and (not full.endswith('.md') or anchor not in anchors(full)):
            print(f'{md}: {target}: no heading makes #{anchor}')
            bad += 1
sys.exit(1 if bad else 0)
