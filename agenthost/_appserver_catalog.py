"""What `agenthost app-server` does with every method and notification of codex app-server 0.169.0: the one place
that says it (the session dispatches by it, docs/app-server.md is rendered from it by `render_markdown()`).

Contract: `CODEX_REQUESTS`, `CODEX_NOTIFICATIONS` and `CODEX_SERVER_REQUESTS` are codex 0.169.0's own lists (its
`generate-json-schema`; tests/test_appserver_catalog.py checks them against the real binary). Each client request
is HANDLED (answered by agenthost from its own records), PASSED (to a runtime that is up, answered as it answers)
or refused (`refusal(method)`: -32600 with the reason). A method codex does not know gets codex's "unknown
variant" error.
"""

from __future__ import annotations

__all__ = [
    "CODEX_NOTIFICATIONS",
    "CODEX_REQUESTS",
    "CODEX_SERVER_REQUESTS",
    "HANDLED",
    "PASSED",
    "refusal",
    "render_markdown",
]

CODEX_REQUESTS = tuple(
    [
        "initialize",
        "thread/start",
        "thread/resume",
        "thread/fork",
        "thread/archive",
        "thread/delete",
        "thread/unsubscribe",
        "thread/name/set",
        "thread/goal/set",
        "thread/goal/get",
        "thread/goal/clear",
        "thread/metadata/update",
        "thread/attachment/add",
        "thread/attachment/list",
        "thread/attachmentOwner/list",
        "thread/attachment/remove",
        "thread/section/move",
        "thread/unarchive",
        "thread/compact/start",
        "thread/shellCommand",
        "thread/approveGuardianDeniedAction",
        "thread/revert",
        "thread/list",
        "threadSection/list",
        "threadSection/create",
        "threadSection/update",
        "threadSection/delete",
        "thread/loaded/list",
        "thread/read",
        "thread/turns/list",
        "thread/items/list",
        "thread/inject_items",
        "skills/list",
        "skills/extraRoots/set",
        "hooks/list",
        "marketplace/add",
        "marketplace/remove",
        "marketplace/upgrade",
        "plugin/list",
        "plugin/installed",
        "plugin/reconcile",
        "plugin/read",
        "plugin/skill/read",
        "plugin/share/save",
        "plugin/share/updateTargets",
        "plugin/share/list",
        "plugin/share/checkout",
        "plugin/share/delete",
        "app/read",
        "app/list",
        "app/installed",
        "fs/readFile",
        "fs/writeFile",
        "fs/createDirectory",
        "fs/getMetadata",
        "fs/readDirectory",
        "fs/remove",
        "fs/copy",
        "fs/watch",
        "fs/unwatch",
        "skills/config/write",
        "plugin/install",
        "plugin/uninstall",
        "turn/start",
        "turn/steer",
        "turn/interrupt",
        "review/start",
        "model/list",
        "account/gatewayOAuth/read",
        "account/gatewayOAuth/login",
        "account/gatewayOAuth/cancel",
        "modelProvider/list",
        "modelProvider/config/write",
        "modelProvider/capabilities/read",
        "experimentalFeature/list",
        "permissionProfile/list",
        "experimentalFeature/enablement/set",
        "mcpServer/oauth/login",
        "config/mcpServer/reload",
        "mcpServerStatus/list",
        "mcpServer/resource/read",
        "mcpServer/tool/call",
        "windowsSandbox/setupStart",
        "windowsSandbox/readiness",
        "account/login/start",
        "account/login/cancel",
        "account/logout",
        "account/securitySetup/read",
        "account/rateLimits/read",
        "account/rateLimitResetCredit/consume",
        "account/usage/read",
        "account/workspaceMessages/read",
        "account/sendAddCreditsNudgeEmail",
        "feedback/upload",
        "feedback/save",
        "command/exec",
        "command/exec/write",
        "command/exec/terminate",
        "command/exec/resize",
        "config/read",
        "externalAgentConfig/detect",
        "externalAgentConfig/import",
        "externalAgentConfig/import/recordHistory",
        "externalAgentConfig/import/readHistories",
        "config/value/write",
        "config/batchWrite",
        "configRequirements/read",
        "account/read",
        "fuzzyFileSearch",
    ]
)
CODEX_NOTIFICATIONS = tuple(
    [
        "error",
        "thread/started",
        "thread/status/changed",
        "thread/readState/changed",
        "thread/archived",
        "thread/deleted",
        "thread/unarchived",
        "thread/closed",
        "thread/reverted",
        "skills/changed",
        "thread/name/updated",
        "thread/section/changed",
        "thread/attachment/updated",
        "thread/goal/updated",
        "thread/prediction/updated",
        "thread/goal/cleared",
        "thread/queue/changed",
        "project/changed",
        "thread/project/updated",
        "thread/environment/connected",
        "thread/environment/disconnected",
        "thread/settings/updated",
        "thread/tokenUsage/updated",
        "turn/started",
        "hook/started",
        "turn/completed",
        "hook/completed",
        "turn/diff/updated",
        "turn/plan/updated",
        "item/started",
        "item/autoApprovalReview/started",
        "item/autoApprovalReview/completed",
        "autoApprovalReview/strictReviewRequired",
        "item/completed",
        "item/agentMessage/delta",
        "item/plan/delta",
        "command/exec/outputDelta",
        "process/outputDelta",
        "process/exited",
        "item/commandExecution/outputDelta",
        "item/commandExecution/terminalInteraction",
        "item/fileChange/outputDelta",
        "item/fileChange/patchUpdated",
        "serverRequest/resolved",
        "item/mcpToolCall/progress",
        "mcpServer/oauthLogin/completed",
        "mcpServer/startupStatus/updated",
        "mcpServer/event/stream/notification",
        "account/updated",
        "account/gatewayOAuth/changed",
        "account/rateLimits/updated",
        "app/list/updated",
        "remoteControl/status/changed",
        "externalAgentConfig/import/progress",
        "externalAgentConfig/import/completed",
        "fs/changed",
        "item/reasoning/summaryTextDelta",
        "item/reasoning/summaryPartAdded",
        "item/reasoning/textDelta",
        "thread/compacted",
        "model/rerouted",
        "model/verification",
        "modelProvider/authRecoveryStarted",
        "modelProvider/authRecoveryCompleted",
        "turn/moderationMetadata",
        "model/safetyBuffering/updated",
        "warning",
        "guardianWarning",
        "deprecationNotice",
        "configWarning",
        "fuzzyFileSearch/sessionUpdated",
        "fuzzyFileSearch/sessionCompleted",
        "thread/realtime/started",
        "thread/realtime/itemAdded",
        "thread/realtime/item/started",
        "thread/realtime/item/transcript/delta",
        "thread/realtime/item/completed",
        "thread/realtime/transcript/delta",
        "thread/realtime/transcript/done",
        "thread/realtime/outputAudio/delta",
        "thread/realtime/sdp",
        "thread/realtime/error",
        "thread/realtime/closed",
        "windows/worldWritableWarning",
        "windowsSandbox/setupCompleted",
        "account/login/completed",
    ]
)
CODEX_SERVER_REQUESTS = tuple(
    [
        "item/commandExecution/requestApproval",
        "item/fileChange/requestApproval",
        "item/tool/requestUserInput",
        "mcpServer/elicitation/request",
        "item/permissions/requestApproval",
        "item/tool/call",
        "account/chatgptAuthTokens/refresh",
        "attestation/generate",
        "applyPatchApproval",
        "execCommandApproval",
    ]
)

HANDLED = {
    "initialize": "agenthost's own userAgent; `optOutNotificationMethods` honoured for every notification it writes",
    "thread/start": "a new agenthost thread, its id a UUIDv7 kept forever; the client's parameters kept with it",
    "thread/resume": "any thread agenthost stores, after failovers and restarts, with its history; parameters merged",
    "thread/read": "from agenthost's database (`includeTurns`: every turn with its user and agent messages)",
    "thread/list": "agenthost's threads that have a turn, newest first, paged by `cursor`/`limit`, `searchTerm`",
    "thread/name/set": "renames the thread (transcript included); `thread/name/updated` follows",
    "thread/loaded/list": "the threads with a running turn",
    "turn/start": "a supervised, durable turn; input items go to the runtime as they are; on a busy thread it "
    "joins the running turn (as codex)",
    "turn/steer": "more input for the running turn (the runtime's `turn/steer`), checked as codex checks it",
    "turn/interrupt": "interrupts the running turn, checked as codex checks it",
}
PASSED = (
    "account/read",
    "account/rateLimits/read",
    "account/usage/read",
    "model/list",
    "modelProvider/list",
    "modelProvider/capabilities/read",
    "config/read",
    "configRequirements/read",
    "skills/list",
    "hooks/list",
    "plugin/list",
    "plugin/installed",
    "plugin/read",
    "app/list",
    "app/installed",
    "app/read",
    "mcpServerStatus/list",
    "experimentalFeature/list",
    "permissionProfile/list",
    "collaborationMode/list",
)
_REFUSED_EXACT = {
    "thread/fork": "a fork needs a durable history of its own; start a new thread instead",
    "thread/rollback": "agenthost's transcripts are append-only",
    "thread/revert": "agenthost's transcripts are append-only",
    "thread/inject_items": "items written behind a turn would not be in agenthost's transcript",
    "thread/compact/start": "compaction would change the runtime's history behind agenthost's transcript",
    "thread/unsubscribe": "a client gets the notifications of the turns it starts; there is nothing to leave",
    "thread/shellCommand": "a command outside a turn would run unsupervised and unrecorded",
    "thread/turns/list": "use thread/read with includeTurns (codex 0.169.0 answers this -32601 too)",
    "thread/items/list": "use thread/read with includeTurns (codex 0.169.0 answers this -32601 too)",
    "review/start": "a review runs outside agenthost's turns and would not be supervised",
    "fuzzyFileSearch": "a file search of one runtime's machine; agenthost's runtimes may run elsewhere",
}
_REFUSED_PREFIXES = (
    ("thread/archive", "agenthost keeps every conversation; archiving is not offered"),
    ("thread/unarchive", "agenthost keeps every conversation; archiving is not offered"),
    ("thread/delete", "agenthost never deletes a conversation"),
    ("thread/goal/", "goals are runtime state agenthost does not keep with the thread"),
    ("thread/metadata/", "thread metadata is runtime state agenthost does not keep with the thread"),
    ("thread/attachment", "attachments are runtime state agenthost does not keep with the thread"),
    ("thread/section/", "sections are a runtime's own organisation, not agenthost's"),
    ("threadSection/", "sections are a runtime's own organisation, not agenthost's"),
    ("thread/approveGuardianDeniedAction", "guardian reviews are not forwarded by agenthost"),
    ("command/exec", "a command outside a turn would run unsupervised and unrecorded"),
    ("fs/", "file access of one runtime's machine; agenthost's runtimes may run elsewhere"),
    (
        "account/",
        "credentials are per runtime; configure them for the runtimes (codex -c / CODEX_HOME), not per client",
    ),
    ("config/", "configuration is per runtime; give it to agenthost (-c), not per client"),
    ("modelProvider/config/", "configuration is per runtime; give it to agenthost (-c), not per client"),
    ("skills/", "writing skill configuration changes every runtime; configure the runtimes instead"),
    ("plugin/", "installing or sharing plugins changes every runtime; configure the runtimes instead"),
    ("marketplace/", "installing plugins changes every runtime; configure the runtimes instead"),
    ("mcpServer/", "MCP servers belong to one runtime process; agenthost may move a thread between runtimes"),
    ("experimentalFeature/", "feature switches change every runtime; configure the runtimes instead"),
    ("windowsSandbox/", "agenthost runs on Unix"),
    ("feedback/", "feedback goes to the runtime's vendor, not through agenthost"),
    ("externalAgentConfig/", "importing another agent's configuration changes every runtime"),
)
NOTIFICATIONS_BY_AGENTHOST = {
    "thread/started": "after thread/start's answer",
    "thread/name/updated": "after thread/name/set's answer",
    "serverRequest/resolved": "with agenthost's own request id: after the client's answer, or when an approval was "
    "withdrawn by the runtime or reset by agenthost",
    "warning": "also when agenthost reset an approval (its worker died) or the runtime refused a turn's options",
    "error": "also when agenthost ended a turn as failed (worker died, deadline, shutdown)",
    "turn/started": "also when agenthost ends a turn the runtime never announced",
    "turn/completed": "held until the turn's end is durable; agenthost's own when it ended the turn itself",
}


def refusal(method: str) -> str | None:
    """Why agenthost does not offer `method` (a codex method it neither handles nor passes on), or None."""
    if method in HANDLED or method in PASSED:
        return None
    if method in _REFUSED_EXACT:
        return _REFUSED_EXACT[method]
    for prefix, reason in _REFUSED_PREFIXES:
        if method.startswith(prefix):
            return reason
    return "not offered by agenthost app-server" if method in CODEX_REQUESTS else None


_THREAD_SCOPED = ("thread/", "turn/", "item/", "hook/")
_ALSO_THREAD_SCOPED = ("error", "serverRequest/resolved", "warning", "model/rerouted", "model/safetyBuffering/updated")


def _notification_row(method: str) -> str:
    if method in NOTIFICATIONS_BY_AGENTHOST:
        return f"| `{method}` | passed on, and sent by agenthost | {NOTIFICATIONS_BY_AGENTHOST[method]} |"
    if method.startswith(_THREAD_SCOPED) or method in _ALSO_THREAD_SCOPED:
        return f"| `{method}` | passed on | when the runtime sends it for the client's turn (its ids replaced) |"
    return f"| `{method}` | not passed on | process-wide news of one runtime process, not of the client's turn |"


def render_markdown() -> str:
    """docs/app-server.md."""
    lines = [
        "# `agenthost app-server`: what happens to each method",
        "",
        "Generated from `agenthost/_appserver_catalog.py` (`python -m agenthost._appserver_catalog`); the lists",
        "are codex app-server 0.169.0's own. Requests are answered by agenthost (**handled**), passed to a runtime",
        "that is up and answered as it answers (**passed**), or refused with -32600 and the reason (**refused**).",
        "Notifications of a client's turn are passed on with the runtime's thread and turn ids replaced by",
        "agenthost's; process-wide notifications of one runtime (account, MCP, configuration) are not, since",
        "agenthost runs several runtimes and may move a thread between them.",
        "",
        "## Client requests",
        "",
        "| method | what agenthost does | why |",
        "|---|---|---|",
    ]
    for method in sorted(set(CODEX_REQUESTS) | set(HANDLED) | set(PASSED)):
        if method in HANDLED:
            lines.append(f"| `{method}` | handled | {HANDLED[method]} |")
        elif method in PASSED:
            lines.append(f"| `{method}` | passed | read-only: any runtime answers it for all of them |")
        else:
            lines.append(f"| `{method}` | refused | {refusal(method)} |")
    lines += ["", "## Server requests (runtime -> client)", "", "| method | what agenthost does |", "|---|---|"]
    for method in CODEX_SERVER_REQUESTS:
        if method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
            what = "forwarded with the front end's own id (0, 1, 2 ...); the client's decision goes back to the runtime"
        else:
            what = "answered by agenthost with an error at once, so the turn goes on and never hangs"
        lines.append(f"| `{method}` | {what} |")
    lines += ["", "## Notifications (server -> client)", "", "| method | | when |", "|---|---|---|"]
    lines += [_notification_row(method) for method in CODEX_NOTIFICATIONS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
