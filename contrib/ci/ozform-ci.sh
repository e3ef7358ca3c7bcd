#!/usr/bin/env bash
# ozform-ci.sh: every command the CI recipes in this directory run, in one script, so that
# GitHub Actions, GitLab CI and ozform's own tests (tests/testsuite/ecosystem.rs) run the same thing.
# Copy it into your manifests repository as ci/ozform-ci.sh (the recipes call it there).
#
#   ozform-ci.sh plan PATH...       validate, then `plan --format markdown --detailed-exitcode`;
#                                   writes the plan and a comment body into $OZFORM_CI_OUT
#   ozform-ci.sh apply PATH...      validate, then `apply --auto-approve`
#   ozform-ci.sh comment github     post the comment body on the pull request, or update the
#                                   one posted before (found by a hidden marker)
#   ozform-ci.sh comment gitlab     the same as a merge-request note
#
# `plan` exits 0 when ozform planned (whether or not there are changes) and 1 when it failed;
# either way it first writes, into $OZFORM_CI_OUT (default ./ozform-ci):
#   plan.md      the Markdown plan (empty when planning failed)
#   plan.log     what ozform printed on stderr (warnings, errors; never a secret)
#   exit-code    ozform's exit code: 0 no changes, 2 changes, 3 changes with removals, 1 failure
#   exit-class   the same in words, for the comment's title
#   comment.md   the comment: a marker, the title, the plan in a collapsible section
#
# Environment: OZFORM (the ozform binary, default `ozform`), OZFORM_CI_OUT, and ozform's own
# (OZ_API_URL, OZ_ADMIN_EMAIL, OZ_ADMIN_PASSWORD, OZ_TOKEN_DIR, …). Posting a comment needs
# curl and jq, and for GitHub: GITHUB_TOKEN, GITHUB_REPOSITORY, OZFORM_CI_PR (the pull request
# number) and GITHUB_API_URL (set by Actions); for GitLab: OZFORM_GITLAB_TOKEN (a project access
# token with the `api` scope: the job token cannot write notes), CI_API_V4_URL, CI_PROJECT_ID and
# CI_MERGE_REQUEST_IID (set by GitLab).
set -euo pipefail

# CI systems pass a variable nobody set as an empty string; ozform would read an empty
# OZ_TOKEN_STORE as a store named "", so an empty one is no setting at all.
for name in OZ_API_VERSION OZ_TOKEN_STORE OZ_TOKEN_DIR; do
    if [ -z "${!name-}" ]; then unset "$name"; fi
done

ozform=${OZFORM:-ozform}
out=${OZFORM_CI_OUT:-ozform-ci}
marker='<!-- ozform-plan -->'

die() {
    printf 'ozform-ci: %s\n' "$*" >&2
    exit 1
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

cmd_plan() {
    [ $# -gt 0 ] || die "usage: ozform-ci.sh plan PATH..."
    mkdir -p "$out"
    : >"$out/plan.md"
    local code=0
    "$ozform" validate "$@" 2>"$out/plan.log" || code=$?
    if [ "$code" -eq 0 ]; then
        "$ozform" plan --format markdown --detailed-exitcode "$@" >"$out/plan.md" 2>"$out/plan.log" || code=$?
    fi
    cat "$out/plan.log" >&2
    local class
    class=$(exit_class "$code")
    printf '%s\n' "$code" >"$out/exit-code"
    printf '%s\n' "$class" >"$out/exit-class"
    {
        printf '%s\n### ozform plan: %s\n\n' "$marker" "$class"
        printf '<details><summary>Plan (exit code %s)</summary>\n\n' "$code"
        if [ -s "$out/plan.md" ]; then
            cat "$out/plan.md"
        else
            printf '_no plan: ozform failed, see its output below_\n'
        fi
        printf '\n</details>\n'
        if [ -s "$out/plan.log" ]; then
            printf '\n<details><summary>ozform output</summary>\n\n```text\n'
            cat "$out/plan.log"
            printf '```\n\n</details>\n'
        fi
    } >"$out/comment.md"
    printf 'ozform-ci: plan: %s\n' "$class" >&2
    case $code in
        0 | 2 | 3) return 0 ;;
        *) return 1 ;;
    esac
}

cmd_apply() {
    [ $# -gt 0 ] || die "usage: ozform-ci.sh apply PATH..."
    if [ -z "${OZ_TOKEN_STORE-}${OZ_TOKEN_DIR-}" ]; then
        printf 'ozform-ci: warning: no OZ_TOKEN_STORE: tokens go to ./ozform-tokens, which a CI job throws away; set a lasting store (see contrib/token-stores)\n' >&2
    fi
    "$ozform" validate "$@"
    "$ozform" apply --auto-approve "$@"
}

# Post $out/comment.md, or update the comment that carries the marker.
# $1: the URL listing the comments, $2: the URL prefix of one comment (its id appended),
# $3: the method that updates one, $4...: curl's authentication header.
post_or_update() {
    local list=$1 one=$2 update=$3
    shift 3
    local body id
    [ -s "$out/comment.md" ] || die "no $out/comment.md: run \`ozform-ci.sh plan\` first"
    body=$(jq --raw-input --slurp '{body: .}' <"$out/comment.md")
    id=$(curl --fail --silent --show-error "$@" "$list?per_page=100" |
        jq --raw-output --arg marker "$marker" \
            '[.[] | select(.body | startswith($marker))][0].id // empty')
    if [ -n "$id" ]; then
        curl --fail --silent --show-error --output /dev/null "$@" -X "$update" \
            -H 'Content-Type: application/json' --data "$body" "$one/$id"
        printf 'ozform-ci: updated comment %s\n' "$id" >&2
    else
        curl --fail --silent --show-error --output /dev/null "$@" -X POST \
            -H 'Content-Type: application/json' --data "$body" "$list"
        printf 'ozform-ci: posted a new comment\n' >&2
    fi
}

cmd_comment() {
    need curl jq
    case ${1:-} in
        github)
            : "${GITHUB_TOKEN:?the token that may comment on pull requests}"
            : "${GITHUB_REPOSITORY:?owner/name, set by GitHub Actions}"
            : "${OZFORM_CI_PR:?the pull request number}"
            local api=${GITHUB_API_URL:-https://api.github.com}/repos/$GITHUB_REPOSITORY/issues
            post_or_update "$api/$OZFORM_CI_PR/comments" "$api/comments" PATCH \
                -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/vnd.github+json'
            ;;
        gitlab)
            : "${OZFORM_GITLAB_TOKEN:?a project access token with the api scope}"
            : "${CI_API_V4_URL:?set by GitLab CI}"
            : "${CI_PROJECT_ID:?set by GitLab CI}"
            : "${CI_MERGE_REQUEST_IID:?set by GitLab CI in merge request pipelines}"
            local notes=$CI_API_V4_URL/projects/$CI_PROJECT_ID/merge_requests/$CI_MERGE_REQUEST_IID/notes
            post_or_update "$notes" "$notes" PUT -H "PRIVATE-TOKEN: $OZFORM_GITLAB_TOKEN"
            ;;
        *) die "usage: ozform-ci.sh comment github|gitlab" ;;
    esac
}

command=${1:-}
[ $# -gt 0 ] && shift
case $command in
    plan) cmd_plan "$@" ;;
    apply) cmd_apply "$@" ;;
    comment) cmd_comment "$@" ;;
    *) die "usage: ozform-ci.sh plan|apply PATH... | comment github|gitlab" ;;
esac
