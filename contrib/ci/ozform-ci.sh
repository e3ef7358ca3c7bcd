#!/usr/bin/env bash
# ozform-ci.sh: every command the CI recipes in this directory run, in one script, so that
# GitHub Actions, GitLab CI and ozform's own tests (tests/testsuite/ci_flow.rs) run the same thing.
# Copy it into your manifests repository as ci/ozform-ci.sh (the recipes call it there).
#
#   ozform-ci.sh plan PATH...                 validate, then plan (`--detailed-exitcode`, saved
#                                             with `--out`); writes the plan and the comment body
#                                             into $OZFORM_CI_OUT
#   ozform-ci.sh comment github|gitlab        post the comment on the pull (merge) request, or
#                                             update the plan comment posted there before
#   ozform-ci.sh merge github|gitlab PATH...  on the default branch after a merge: plan again and
#                                             apply that plan only when it is the one reviewed
#   ozform-ci.sh drift github|gitlab PATH...  on a schedule: plan, and keep one issue
#                                             `ozform drift: NAME` holding the plan while there
#                                             are changes; close it when there are none
#   ozform-ci.sh apply PATH...                validate, then `apply --auto-approve`, unreviewed
#                                             (for a manual run; the recipes use `merge`)
#
# Several installations: with a project file (`ozform.yaml` in the working directory, or
# OZ_CONFIG), give no PATH. Every command then acts on the project file's installations (or those
# OZ_INSTALLATION names): `plan` saves one plan per installation in $OZFORM_CI_OUT/plans/ and
# posts ONE comment holding all of them; the plan id reviewed is the combined id over every
# installation's plan, so `merge` applies (`apply --plan plans/`) only when no installation's
# plan changed since review. `plan.json` is then the directory `plans/`.
#
# `plan` exits 0 when ozform planned (whether or not there are changes) and 1 when it failed;
# either way it first writes, into $OZFORM_CI_OUT (default ./ozform-ci):
#   plan.json    the saved plan (absent when planning failed); with a project file, plans/
#   plan.md      the whole Markdown plan: keep it as the job's artifact (the comment may hold
#                only part of it)
#   plan.log     what ozform printed on stderr (warnings, errors; never a secret)
#   exit-code    ozform's exit code: 0 no changes, 2 changes, 3 changes with removals, 1 failure
#   exit-class   the same in words, for the comment's title
#   plan-id      the plan id (empty when planning failed); with a project file, the combined id
#   comment.md   the comment: markers, the title, the plan fitted to $OZFORM_CI_MAX_BYTES
#
# The merge, step by step. The plan comment of a pull request starts with two hidden lines, the
# marker `<!-- ozform-plan -->` and `<!-- ozform-plan-id: ID -->`. After a merge, `merge` finds the
# merged pull request of the commit ($GITHUB_SHA, $CI_COMMIT_SHA) through the API, pages through
# its comments and takes the last plan comment posted by the CI's own account
# ($OZFORM_CI_COMMENTER: GitHub `github-actions[bot]`, GitLab the token's user). It plans again
# and applies (`ozform apply --plan`) only when the new plan id equals the reviewed one, and, for
# a plan with removals (exit 3), only when the pull request carries the label
# $OZFORM_CI_REMOVALS_LABEL (default `ozform:removals-approved`). Otherwise it applies nothing,
# comments why (with the new plan: "the plan changed since review", or which label to add) and
# exits 1. Every outcome is commented on the pull request; the job's exit code is apply's.
#
# Environment: OZFORM (the ozform binary, default `ozform`), OZFORM_CI_OUT, OZFORM_CI_MAX_BYTES
# (default 60000: GitHub refuses comments over 65,536 characters), OZFORM_CI_REMOVALS_LABEL,
# OZFORM_CI_COMMENTER, OZFORM_CI_NAME (the NAME of the drift issue; default OZ_INSTALLATION, else
# the API URL's origin), and ozform's own (OZ_API_URL, OZ_ADMIN_EMAIL, OZ_ADMIN_PASSWORD,
# OZ_TOKEN_STORE, …). Talking to the forge needs curl and jq, and for GitHub: GITHUB_TOKEN,
# GITHUB_REPOSITORY, GITHUB_API_URL and GITHUB_SHA (set by Actions) and OZFORM_CI_PR (the pull
# request number, for `comment`); for GitLab: OZFORM_GITLAB_TOKEN (a project access token with
# the `api` scope: the job token cannot write notes or issues), CI_API_V4_URL, CI_PROJECT_ID,
# CI_COMMIT_SHA and CI_MERGE_REQUEST_IID (set by GitLab).
set -euo pipefail

# CI systems pass a variable nobody set as an empty string; ozform would read an empty
# OZ_TOKEN_STORE as a store named "", so an empty one is no setting at all.
for name in OZ_API_VERSION OZ_TOKEN_STORE OZ_TOKEN_DIR OZ_INSTALLATION; do
    if [ -z "${!name-}" ]; then unset "$name"; fi
done

ozform=${OZFORM:-ozform}
out=${OZFORM_CI_OUT:-ozform-ci}
max_bytes=${OZFORM_CI_MAX_BYTES:-60000}
removals_label=${OZFORM_CI_REMOVALS_LABEL:-ozform:removals-approved}
plan_marker='<!-- ozform-plan -->'
merge_marker='<!-- ozform-merge -->'
drift_marker='<!-- ozform-drift -->'
# The most pages of 100 read from one listing: past it, the listing is refused as too long.
max_pages=100
# The most bytes of ozform's output shown in a comment (the whole is in the artifact).
max_log_bytes=3000

die() {
    printf 'ozform-ci: %s\n' "$*" >&2
    exit 1
}

say() {
    printf 'ozform-ci: %s\n' "$*" >&2
}

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "\`$tool\` is needed and not on PATH"
    done
}

# The words for an exit code of `plan --detailed-exitcode`.
exit_class() {
    case $1 in
        0) echo "no changes" ;;
        2) echo "changes" ;;
        3) echo "changes, including removals" ;;
        *) echo "failed (exit $1)" ;;
    esac
}

# A fenced code block of file $1 (at most $max_log_bytes of it, whole lines), fenced with more
# backticks than any run of them inside, so that no line of it can close the fence.
fenced() {
    local fence='```' run
    run=$({ grep -o '`\+' "$1" || true; } | awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }')
    while [ "${#fence}" -le "$run" ]; do fence="$fence\`"; done
    printf '%stext\n' "$fence"
    if [ "$(wc -c <"$1")" -gt "$max_log_bytes" ]; then
        head -c "$max_log_bytes" "$1" | sed '$d'
        printf "… (cut: the whole output is in the job's artifact \`%s\`)\n" "$(basename "$1")"
    else
        cat "$1"
    fi
    printf '%s\n' "$fence"
}

# A collapsible section titled $1 holding the fenced file $2, when it is not empty.
log_section() {
    if [ -s "$2" ]; then
        printf '\n<details><summary>%s</summary>\n\n' "$1"
        fenced "$2"
        printf '\n</details>\n'
    fi
}

# With a project file (no PATH given): the directory of saved plans; else the saved plan.
project=false
saved() {
    if [ "$project" = true ]; then printf '%s' "$out/plans"; else printf '%s' "$out/plan.json"; fi
}

# The plan fitted to $max_bytes (ozform says what it left out and that `plan.md` has it all).
fitted_plan() {
    "$ozform" show --format markdown --max-bytes "$max_bytes" "$(saved)"
}

# Validate and plan PATH...; writes the files listed at the top and sets $plan_code.
run_plan() {
    mkdir -p "$out"
    rm -rf "$out/plan.json" "$out/plans"
    : >"$out/plan.md"
    : >"$out/plan-id"
    : >"$out/plan.log"
    plan_code=0
    # With a project file, `plan` validates each installation's manifests itself.
    if [ "$project" = false ]; then
        "$ozform" validate "$@" 2>"$out/plan.log" || plan_code=$?
    fi
    # `--out DIR/` writes DIR/<installation>.json, even for one installation.
    local target
    target=$(saved)
    [ "$project" = false ] || target="$target/"
    if [ "$plan_code" -eq 0 ]; then
        "$ozform" plan --quiet --format markdown --detailed-exitcode --out "$target" "$@" \
            >"$out/plan.md" 2>"$out/plan.log" || plan_code=$?
    fi
    cat "$out/plan.log" >&2
    case $plan_code in
        0 | 2 | 3)
            if [ "$project" = true ]; then
                # The first id comment of the grouped Markdown is the combined one.
                sed -n 's/^<!-- ozform-plan-id: \([0-9a-f]*\) -->$/\1/p' "$out/plan.md" | head -n 1 >"$out/plan-id"
            else
                jq --raw-output '.plan_id' "$out/plan.json" >"$out/plan-id"
            fi
            ;;
        *) rm -rf "$out/plan.json" "$out/plans" ;;
    esac
    printf '%s\n' "$plan_code" >"$out/exit-code"
    exit_class "$plan_code" >"$out/exit-class"
}

cmd_plan() {
    [ $# -gt 0 ] || [ "$project" = true ] || die "usage: ozform-ci.sh plan PATH... (or a project file ozform.yaml)"
    need jq
    run_plan "$@"
    local class id
    class=$(exit_class "$plan_code")
    id=$(cat "$out/plan-id")
    {
        printf '%s\n' "$plan_marker"
        if [ -n "$id" ]; then printf '<!-- ozform-plan-id: %s -->\n' "$id"; fi
        printf '### ozform plan: %s\n\n' "$class"
        printf '<details><summary>Plan (exit code %s)</summary>\n\n' "$plan_code"
        if [ -n "$id" ]; then
            fitted_plan
        else
            printf '_no plan: ozform failed, see its output below_\n'
        fi
        printf '\n</details>\n'
        log_section 'ozform output' "$out/plan.log"
    } >"$out/comment.md"
    say "plan: $class"
    case $plan_code in
        0 | 2 | 3) return 0 ;;
        *) return 1 ;;
    esac
}

cmd_apply() {
    [ $# -gt 0 ] || [ "$project" = true ] || die "usage: ozform-ci.sh apply PATH... (or a project file ozform.yaml)"
    warn_lasting_store
    if [ "$project" = false ]; then "$ozform" validate "$@"; fi
    "$ozform" apply --auto-approve "$@"
}

warn_lasting_store() {
    # A project file names each installation's store.
    if [ "$project" = false ] && [ -z "${OZ_TOKEN_STORE-}${OZ_TOKEN_DIR-}" ]; then
        say "warning: no OZ_TOKEN_STORE: tokens go to ./ozform-tokens, which a CI job throws away; set a lasting store (see contrib/token-stores)"
    fi
}

# The forge: its API, how to authenticate, and the shapes of its answers. Sets globals.
forge_setup() {
    need curl jq
    forge=${1:-}
    case $forge in
        github)
            : "${GITHUB_TOKEN:?the token that may comment on pull requests}"
            : "${GITHUB_REPOSITORY:?owner/name, set by GitHub Actions}"
            api=${GITHUB_API_URL:-https://api.github.com}/repos/$GITHUB_REPOSITORY
            auth=(-H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/vnd.github+json')
            commenter=${OZFORM_CI_COMMENTER:-github-actions[bot]}
            author_field=.user.login
            ;;
        gitlab)
            : "${OZFORM_GITLAB_TOKEN:?a project access token with the api scope}"
            : "${CI_API_V4_URL:?set by GitLab CI}"
            : "${CI_PROJECT_ID:?set by GitLab CI}"
            api=$CI_API_V4_URL/projects/$CI_PROJECT_ID
            auth=(-H "PRIVATE-TOKEN: $OZFORM_GITLAB_TOKEN")
            author_field=.author.username
            commenter=${OZFORM_CI_COMMENTER:-}
            if [ -z "$commenter" ]; then
                commenter=$(request GET "$CI_API_V4_URL/user" | jq --raw-output '.username')
            fi
            ;;
        *) die "the forge is github or gitlab, not \`$forge\`" ;;
    esac
}

# METHOD URL [JSON BODY]: the answer on stdout; a failure stops the script, naming the request.
request() {
    local method=$1 url=$2
    local args=(--fail-with-body --silent --show-error "${auth[@]}" -X "$method")
    if [ $# -gt 2 ]; then
        args+=(-H 'Content-Type: application/json' --data-binary @-)
        printf '%s' "$3" | curl "${args[@]}" "$url" || die "$method $url failed"
    else
        curl "${args[@]}" "$url" </dev/null || die "$method $url failed"
    fi
}

# Every entry of the listing at URL, as one JSON array: page after page of 100 until a short one.
all_pages() {
    local url=$1 separator='?' page=1 answer count all='[]'
    case $url in *\?*) separator='&' ;; esac
    while :; do
        [ "$page" -le "$max_pages" ] || die "$url lists more than $((max_pages * 100)) entries"
        answer=$(request GET "$url${separator}per_page=100&page=$page")
        count=$(jq 'if type == "array" then length else error("not a list") end' <<<"$answer") ||
            die "GET $url answered something other than a list"
        all=$(jq --slurp '.[0] + .[1]' <(printf '%s' "$all") <(printf '%s' "$answer"))
        [ "$count" -ge 100 ] || break
        page=$((page + 1))
    done
    printf '%s\n' "$all"
}

# The comments (notes) of pull (merge) request $1, oldest first.
comments_url() {
    case $forge in
        github) printf '%s/issues/%s/comments' "$api" "$1" ;;
        gitlab) printf '%s/merge_requests/%s/notes' "$api" "$1" ;;
    esac
}

# The id of the last comment among the JSON array on stdin posted by the CI's account and
# starting with marker $1 (empty when there is none).
last_own_comment() {
    jq --raw-output --arg marker "$1" --arg who "$commenter" \
        "[.[] | select(($author_field) == \$who and (.body // \"\" | startswith(\$marker)))] | last | .id // empty"
}

# Post $2 (a file) as a new comment on pull (merge) request $1.
post_comment() {
    local body
    body=$(jq --raw-input --slurp '{body: .}' <"$2")
    request POST "$(comments_url "$1")" "$body" >/dev/null
}

cmd_comment() {
    forge_setup "${1:-}"
    local number
    case $forge in
        github) number=${OZFORM_CI_PR:?the pull request number} ;;
        gitlab) number=${CI_MERGE_REQUEST_IID:?set by GitLab CI in merge request pipelines} ;;
    esac
    [ -s "$out/comment.md" ] || die "no $out/comment.md: run \`ozform-ci.sh plan\` first"
    local list id body
    list=$(comments_url "$number")
    id=$(all_pages "$list" | last_own_comment "$plan_marker")
    if [ -n "$id" ]; then
        body=$(jq --raw-input --slurp '{body: .}' <"$out/comment.md")
        case $forge in
            github) request PATCH "$api/issues/comments/$id" "$body" >/dev/null ;;
            gitlab) request PUT "$list/$id" "$body" >/dev/null ;;
        esac
        say "updated comment $id"
    else
        post_comment "$number" "$out/comment.md"
        say "posted a new comment"
    fi
}

# The merged pull (merge) request of commit $1, as JSON `{number, labels: [names]}`; empty when
# the commit is no merged request's.
merged_request() {
    case $forge in
        github)
            request GET "$api/commits/$1/pulls" |
                jq '[.[] | select(.merged_at != null)] | first // empty | {number, labels: [.labels[]?.name]}'
            ;;
        gitlab)
            request GET "$api/repository/commits/$1/merge_requests" |
                jq '[.[] | select(.state == "merged")] | first // empty | {number: .iid, labels: (.labels // [])}'
            ;;
    esac
}

# Write the merge job's comment ($1: its title, $2: a paragraph, $3: whether to show the new
# plan) into $out/merge-comment.md.
merge_comment() {
    {
        printf '%s\n### ozform merge: %s\n\n%s\n' "$merge_marker" "$1" "$2"
        if [ "$3" = with-plan ]; then
            printf '\n<details><summary>The plan of the merge commit (exit code %s)</summary>\n\n' "$plan_code"
            fitted_plan
            printf '\n</details>\n'
        fi
        log_section 'ozform plan output' "$out/plan.log"
        log_section 'ozform apply output' "$out/apply.log"
    } >"$out/merge-comment.md"
}

cmd_merge() {
    forge_setup "${1:-}"
    shift
    [ $# -gt 0 ] || [ "$project" = true ] || die "usage: ozform-ci.sh merge github|gitlab PATH... (or a project file ozform.yaml)"
    local sha
    case $forge in
        github) sha=${GITHUB_SHA:?the merge commit, set by GitHub Actions} ;;
        gitlab) sha=${CI_COMMIT_SHA:?the merge commit, set by GitLab CI} ;;
    esac
    mkdir -p "$out"
    rm -f "$out/apply.log" "$out/merge-comment.md"
    local request_json number labels
    request_json=$(merged_request "$sha")
    [ -n "$request_json" ] ||
        die "commit $sha is no merged pull request's: nothing applied (on merge, only a reviewed plan is applied)"
    number=$(jq --raw-output '.number' <<<"$request_json")
    labels=$(jq --compact-output '.labels' <<<"$request_json")
    local reviewed
    reviewed=$(all_pages "$(comments_url "$number")" |
        jq --raw-output --arg marker "$plan_marker" --arg who "$commenter" \
            "[.[] | select(($author_field) == \$who) | .body // \"\"
              | capture(\"^\" + \$marker + \"\\r?\\n<!-- ozform-plan-id: (?<id>[0-9a-f]+) -->\")]
             | last | .id // empty")
    say "merged request: #$number; reviewed plan: ${reviewed:-none}"

    warn_lasting_store
    run_plan "$@"
    local id
    id=$(cat "$out/plan-id")
    case $plan_code in
        0)
            say "no changes: nothing to apply"
            return 0
            ;;
        2 | 3) ;;
        *)
            merge_comment "planning failed (exit $plan_code), nothing applied" \
                "ozform could not plan the merge commit \`$sha\`: see its output below." no
            post_comment "$number" "$out/merge-comment.md"
            die "planning failed: nothing applied"
            ;;
    esac
    if [ "$id" != "$reviewed" ]; then
        local was="no plan was reviewed on this pull request"
        [ -z "$reviewed" ] || was="the plan reviewed on this pull request has id \`$reviewed\`"
        merge_comment "the plan changed since review, nothing applied" \
            "The merge commit \`$sha\` plans the changes below (plan id \`$id\`), but $was: the plan changed since review, and nothing was applied. If the new plan is right, apply it by hand (\`ozform apply --plan $(basename "$(saved)")\` with this job's artifact, before the live state moves again), or push a change through a new pull request." \
            with-plan
        post_comment "$number" "$out/merge-comment.md"
        die "the plan changed since review (reviewed: ${reviewed:-none}, now: $id): nothing applied"
    fi
    local approved
    approved=$(jq --arg wanted "$removals_label" 'any(.[]; . == $wanted)' <<<"$labels")
    if [ "$plan_code" -eq 3 ] && [ "$approved" != true ]; then
        merge_comment "removals not approved, nothing applied" \
            "The reviewed plan (id \`$id\`) removes service users, and this pull request has no label \`$removals_label\`: nothing was applied. To apply it, add the label \`$removals_label\` to this pull request and run this job again." \
            with-plan
        post_comment "$number" "$out/merge-comment.md"
        die "the plan removes service users and the pull request has no label \`$removals_label\`: nothing applied"
    fi
    local code=0
    "$ozform" apply --plan "$(saved)" >"$out/apply.log" 2>&1 || code=$?
    cat "$out/apply.log" >&2
    if [ "$code" -eq 0 ]; then
        merge_comment "applied" "Applied the reviewed plan \`$id\` of the merge commit \`$sha\`." no
    else
        merge_comment "apply failed (exit $code)" \
            "Applying the reviewed plan \`$id\` of the merge commit \`$sha\` failed: see ozform's output below; a re-run plans again." no
    fi
    post_comment "$number" "$out/merge-comment.md"
    say "apply: exit $code"
    return "$code"
}

# The name in the drift issue's title: OZFORM_CI_NAME, OZ_INSTALLATION, or the API URL's origin.
drift_name() {
    if [ -n "${OZFORM_CI_NAME:-}" ]; then
        printf '%s' "$OZFORM_CI_NAME"
    elif [ -n "${OZ_INSTALLATION:-}" ]; then
        printf '%s' "$OZ_INSTALLATION"
    elif [ "$project" = true ]; then
        printf 'all installations'
    else
        local url=${OZ_API_URL:?the API URL names the drift issue: set OZ_API_URL or OZFORM_CI_NAME}
        local scheme=${url%%://*} rest=${url#*://}
        printf '%s://%s' "$scheme" "${rest%%/*}"
    fi
}

cmd_drift() {
    forge_setup "${1:-}"
    shift
    [ $# -gt 0 ] || [ "$project" = true ] || die "usage: ozform-ci.sh drift github|gitlab PATH... (or a project file ozform.yaml)"
    local title issues issue
    title="ozform drift: $(drift_name)"
    run_plan "$@"
    case $plan_code in
        0 | 2 | 3) ;;
        *) die "planning failed (exit $plan_code): the drift issue is left as it is" ;;
    esac
    case $forge in
        github) issues=$(all_pages "$api/issues?state=open") ;;
        gitlab) issues=$(all_pages "$api/issues?state=opened&in=title&search=$(jq --raw-output --null-input --arg t "$title" '$t | @uri')") ;;
    esac
    # The CI account's open issue of that title (GitHub lists pull requests as issues too).
    issue=$(jq --raw-output --arg title "$title" --arg who "$commenter" \
        "[.[] | select(.title == \$title and ($author_field) == \$who and (.pull_request == null))] | first
         | (.number // .iid) // empty" <<<"$issues")
    if [ "$plan_code" -eq 0 ]; then
        if [ -n "$issue" ]; then
            local note
            note=$(jq --null-input '{body: "The plan shows no changes any more: closed by the drift check."}')
            case $forge in
                github)
                    request POST "$api/issues/$issue/comments" "$note" >/dev/null
                    request PATCH "$api/issues/$issue" '{"state": "closed"}' >/dev/null
                    ;;
                gitlab)
                    request POST "$api/issues/$issue/notes" "$note" >/dev/null
                    request PUT "$api/issues/$issue" '{"state_event": "close"}' >/dev/null
                    ;;
            esac
            say "no changes: closed issue #$issue"
        else
            say "no changes, no drift issue open"
        fi
        return 0
    fi
    {
        printf '%s\n' "$drift_marker"
        printf 'The live installation differs from the manifests: %s shows %s (exit code %s). Apply the manifests, or change them to match, and the next check closes this issue.\n\n' \
            "\`ozform plan\`" \
            "$(exit_class "$plan_code")" "$plan_code"
        fitted_plan
        log_section 'ozform output' "$out/plan.log"
    } >"$out/drift-issue.md"
    local body_key=body
    [ "$forge" = gitlab ] && body_key=description
    local fields
    fields=$(jq --raw-input --slurp --arg title "$title" --arg key "$body_key" '{title: $title, ($key): .}' <"$out/drift-issue.md")
    if [ -n "$issue" ]; then
        case $forge in
            github) request PATCH "$api/issues/$issue" "$fields" >/dev/null ;;
            gitlab) request PUT "$api/issues/$issue" "$fields" >/dev/null ;;
        esac
        say "drift: updated issue #$issue"
    else
        issue=$(request POST "$api/issues" "$fields" | jq --raw-output '.number // .iid')
        say "drift: opened issue #$issue"
    fi
}

command=${1:-}
[ $# -gt 0 ] && shift
# No PATH: the installations of the project file.
case $command in
    plan | apply) [ $# -gt 0 ] || project=true ;;
    merge | drift) [ $# -gt 1 ] || project=true ;;
esac
case $command in
    plan) cmd_plan "$@" ;;
    apply) cmd_apply "$@" ;;
    comment) cmd_comment "$@" ;;
    merge) cmd_merge "$@" ;;
    drift) cmd_drift "$@" ;;
    *) die "usage: ozform-ci.sh plan|apply PATH... | comment github|gitlab | merge|drift github|gitlab PATH..." ;;
esac
