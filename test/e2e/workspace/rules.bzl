"""A tree artifact (ctx.actions.declare_directory) and a Starlark consumer of it."""

def _tree_dir_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        outputs = [out],
        inputs = [ctx.file.src],
        arguments = [out.path, ctx.file.src.path],
        mnemonic = "TreeDir",
        progress_message = "Writing tree artifact %s" % out.short_path,
        command = """
set -eu
d="$1"
src="$2"
mkdir -p "$d/sub/nested" "$d/bin"
printf 'alpha\\n' > "$d/a.txt"
seq 1 100 > "$d/b.txt"
cp "$src" "$d/sub/copy.txt"
printf 'deep file\\n' > "$d/sub/nested/deep.txt"
printf '#!/bin/sh\\necho tree tool ran\\n' > "$d/bin/tool.sh"
chmod 755 "$d/bin/tool.sh"
""",
    )
    return [DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = [out]))]

tree_dir = rule(
    implementation = _tree_dir_impl,
    attrs = {
        "src": attr.label(allow_single_file = True, mandatory = True),
    },
)

def _tree_listing_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    d = ctx.file.dir
    ctx.actions.run_shell(
        outputs = [out],
        inputs = [d],
        arguments = [d.path, out.path],
        mnemonic = "TreeListing",
        progress_message = "Listing tree artifact %s" % d.short_path,
        command = """
set -eu
cd "$1"
# Sandboxed inputs may be symlinks: follow them.
find -L . -type f | LC_ALL=C sort | while read -r f; do
  printf '%s %s\\n' "$f" "$(wc -c < "$f" | tr -d ' ')"
done > "$OLDPWD/$2"
""",
    )
    return [DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = [out]))]

tree_listing = rule(
    implementation = _tree_listing_impl,
    attrs = {
        "dir": attr.label(allow_single_file = True, mandatory = True),
    },
)
