# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cellfs_vos_global_optspecs
    string join \n c/config= h/help
end

function __fish_cellfs_vos_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cellfs_vos_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cellfs_vos_using_subcommand
    set -l cmd (__fish_cellfs_vos_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "create" -d 'Create a volume'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "list" -d 'List the cell\'s volumes'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "listvldb" -d 'List the volume location database: each volume with its read-only and backup clones and their sites'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "syncvldb" -d 'Compare the volume location database with what the fileserver holds and mend dangling clone references'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "examine" -d 'Describe one volume'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "remove" -d 'Delete a volume and everything in it'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "setquota" -d 'Change a volume\'s quota'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "mkmount" -d 'Create a mount point for a volume at a path of the cell'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "move" -d 'Move a read-write volume to another fileserver of the cell; nodes follow it without a remount'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "addsite" -d 'Add a read-only site for a volume on a fileserver; `release` fills it'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "remsite" -d 'Remove a read-only site of a volume (the last one takes the read-only copy with it)'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "release" -d 'Release a volume: its read-only sites get a snapshot of it, all at once, and every node reading it through a regular mount point sees it'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "rename" -d 'Rename a volume (its backup clone follows). Mount points name volumes: make those naming the old name again'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "lock" -d 'Lock a volume: admin operations on it are refused until `unlock`'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "unlock" -d 'Release a volume\'s lock'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "backup" -d 'Make (or remake) the read-only clone NAME.backup of a volume: a snapshot that shares unchanged data with the volume'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "dump" -d 'Write a checksummed dump of a volume (docs/DUMP-FORMAT.md)'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "restore" -d 'Restore a dump as a volume: a full dump makes a new volume (or replaces one with --overwrite); an incremental dump updates the volume it was taken from'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "host" -d 'Credentials of web nodes, admins and fileservers (mutual TLS)'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "user" -d 'Users of the cell (like AFS `pts`): names for the uids web nodes use'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "group" -d 'Groups of the cell, for directory ACLs'
complete -c cellfs-vos -n "__fish_cellfs_vos_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand create" -l quota -d 'Quota, e.g. `10GiB` or `500MB`; 0 or omitted means unlimited' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand create" -l server -d 'The fileserver to act on (host:port); the cell\'s fileserver when omitted' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand create" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand create" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand list" -l format -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON, for scripts'"
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand list" -l server -d 'The fileserver to act on (host:port); the cell\'s fileserver when omitted' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand list" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand listvldb" -l format -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON, for scripts'"
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand listvldb" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand listvldb" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand syncvldb" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand syncvldb" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand examine" -l format -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON, for scripts'"
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand examine" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand examine" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand remove" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand remove" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand setquota" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand setquota" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand mkmount" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand mkmount" -l rw -d 'A read-write mount point: always shows the read-write volume. A regular one shows the released read-only copy when there is one'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand mkmount" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand move" -l to -d 'The fileserver to move it to (host:port)' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand move" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand move" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand addsite" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand addsite" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand remsite" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand remsite" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand release" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand release" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand rename" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand rename" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand lock" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand lock" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand unlock" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand unlock" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand backup" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand backup" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand dump" -s f -l file -d 'Where to write the dump (default: standard output)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand dump" -l since -d 'Incremental: only the contents of files changed since this time (RFC 3339, e.g. `2026-11-29T06:00:00Z`, or `@UNIX_SECONDS`)' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand dump" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand dump" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand restore" -s f -l file -d 'The dump to read' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand restore" -l server -d 'The fileserver to act on (host:port); the cell\'s fileserver when omitted' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand restore" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand restore" -l overwrite -d 'Replace the volume if it exists'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand restore" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and not __fish_seen_subcommand_from add revoke list help" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and not __fish_seen_subcommand_from add revoke list help" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and not __fish_seen_subcommand_from add revoke list help" -f -a "add" -d 'Issue a credential and write its bundle (ca.pem, client.pem, client.key, cell.toml) into a new folder'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and not __fish_seen_subcommand_from add revoke list help" -f -a "revoke" -d 'Revoke every credential issued to a name: its connections are closed and refused from then on'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and not __fish_seen_subcommand_from add revoke list help" -f -a "list" -d 'List the credentials the cell issued'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and not __fish_seen_subcommand_from add revoke list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from add" -l out -d 'The folder to write the bundle into (must not exist)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from add" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from add" -l admin -d 'An admin credential (for `cellfs-vos`) instead of a host one'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from revoke" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from list" -l format -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON, for scripts'"
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from list" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from help" -f -a "add" -d 'Issue a credential and write its bundle (ca.pem, client.pem, client.key, cell.toml) into a new folder'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke every credential issued to a name: its connections are closed and refused from then on'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the credentials the cell issued'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand host; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and not __fish_seen_subcommand_from add remove list help" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and not __fish_seen_subcommand_from add remove list help" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and not __fish_seen_subcommand_from add remove list help" -f -a "add" -d 'Add a user with the uid web nodes run its processes as'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and not __fish_seen_subcommand_from add remove list help" -f -a "remove" -d 'Remove a user (and its group memberships)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and not __fish_seen_subcommand_from add remove list help" -f -a "list" -d 'List the users'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and not __fish_seen_subcommand_from add remove list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from add" -l uid -d 'Its uid on the web nodes' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from add" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from remove" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from list" -l format -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON, for scripts'"
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from list" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a user with the uid web nodes run its processes as'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a user (and its group memberships)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the users'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and not __fish_seen_subcommand_from add remove member list help" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and not __fish_seen_subcommand_from add remove member list help" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and not __fish_seen_subcommand_from add remove member list help" -f -a "add" -d 'Add a group with the gid web nodes know it by'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and not __fish_seen_subcommand_from add remove member list help" -f -a "remove" -d 'Remove a group'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and not __fish_seen_subcommand_from add remove member list help" -f -a "member" -d 'Add or remove members'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and not __fish_seen_subcommand_from add remove member list help" -f -a "list" -d 'List the groups and their members'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and not __fish_seen_subcommand_from add remove member list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from add" -l gid -d 'Its gid on the web nodes' -r
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from add" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from remove" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from member" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from member" -s h -l help -d 'Print help'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from member" -f -a "add" -d 'Add a user to a group'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from member" -f -a "remove" -d 'Remove a user from a group'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from member" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from list" -l format -d 'Output format' -r -f -a "text\t'Human-readable text'
json\t'JSON, for scripts'"
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from list" -s c -l config -d 'The cell\'s admin config (`cell.toml` from the fileserver\'s `admin/` bundle; a host credential may only list and examine)' -r -F
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a group with the gid web nodes know it by'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a group'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "member" -d 'Add or remove members'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the groups and their members'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand group; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "create" -d 'Create a volume'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "list" -d 'List the cell\'s volumes'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "listvldb" -d 'List the volume location database: each volume with its read-only and backup clones and their sites'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "syncvldb" -d 'Compare the volume location database with what the fileserver holds and mend dangling clone references'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "examine" -d 'Describe one volume'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "remove" -d 'Delete a volume and everything in it'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "setquota" -d 'Change a volume\'s quota'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "mkmount" -d 'Create a mount point for a volume at a path of the cell'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "move" -d 'Move a read-write volume to another fileserver of the cell; nodes follow it without a remount'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "addsite" -d 'Add a read-only site for a volume on a fileserver; `release` fills it'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "remsite" -d 'Remove a read-only site of a volume (the last one takes the read-only copy with it)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "release" -d 'Release a volume: its read-only sites get a snapshot of it, all at once, and every node reading it through a regular mount point sees it'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "rename" -d 'Rename a volume (its backup clone follows). Mount points name volumes: make those naming the old name again'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "lock" -d 'Lock a volume: admin operations on it are refused until `unlock`'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "unlock" -d 'Release a volume\'s lock'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "backup" -d 'Make (or remake) the read-only clone NAME.backup of a volume: a snapshot that shares unchanged data with the volume'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "dump" -d 'Write a checksummed dump of a volume (docs/DUMP-FORMAT.md)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "restore" -d 'Restore a dump as a volume: a full dump makes a new volume (or replaces one with --overwrite); an incremental dump updates the volume it was taken from'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "host" -d 'Credentials of web nodes, admins and fileservers (mutual TLS)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "user" -d 'Users of the cell (like AFS `pts`): names for the uids web nodes use'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "group" -d 'Groups of the cell, for directory ACLs'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and not __fish_seen_subcommand_from create list listvldb syncvldb examine remove setquota mkmount move addsite remsite release rename lock unlock backup dump restore host user group help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from host" -f -a "add" -d 'Issue a credential and write its bundle (ca.pem, client.pem, client.key, cell.toml) into a new folder'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from host" -f -a "revoke" -d 'Revoke every credential issued to a name: its connections are closed and refused from then on'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from host" -f -a "list" -d 'List the credentials the cell issued'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "add" -d 'Add a user with the uid web nodes run its processes as'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "remove" -d 'Remove a user (and its group memberships)'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "list" -d 'List the users'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "add" -d 'Add a group with the gid web nodes know it by'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "remove" -d 'Remove a group'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "member" -d 'Add or remove members'
complete -c cellfs-vos -n "__fish_cellfs_vos_using_subcommand help; and __fish_seen_subcommand_from group" -f -a "list" -d 'List the groups and their members'
