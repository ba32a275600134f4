# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cellfs_fileserver_global_optspecs
    string join \n h/help
end

function __fish_cellfs_fileserver_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cellfs_fileserver_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cellfs_fileserver_using_subcommand
    set -l cmd (__fish_cellfs_fileserver_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_needs_command" -s h -l help -d 'Print help'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_needs_command" -f -a "init" -d 'Create a new cell: CA, credentials, client config, VLDB and root volume. With --join, add this machine\'s fileserver to an existing cell instead'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_needs_command" -f -a "serve" -d 'Serve a cell until SIGINT or SIGTERM'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_needs_command" -f -a "salvage" -d 'Check every volume\'s metadata against its data files, like the AFS salvager, and with --repair fix what is found. Refuses to run while a server serves the same folder. Exit status: 0 when clean (or clean after repair), 1 when problems remain'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand init" -l data -d 'Data folder to create' -r -F
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand init" -l cell -d 'Cell name (not with --join: the cell\'s own name is used)' -r
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand init" -l join -d 'Join the cell whose first server\'s data folder (or a copy of its ca.pem, ca.key and client/) is at this path; the first server must be running' -r -F
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand init" -l listen -d 'Address to listen on, also given to clients (host:port)' -r
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand init" -l promise-secs -d 'Lifetime of callback promises in seconds' -r
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand init" -s h -l help -d 'Print help'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand serve" -l data -d 'Data folder made by `init`' -r -F
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand serve" -l listen -d 'Listen address overriding server.toml' -r
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand serve" -l journal-len -d 'Changes each volume\'s journal remembers for reconnecting clients, overriding server.toml\'s `journal_len` (default 100000)' -r
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand serve" -l metrics -d 'Where to serve Prometheus metrics (http://ADDR/metrics), or `off`, overriding server.toml\'s `metrics` (default 127.0.0.1:9470)' -r
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand serve" -s h -l help -d 'Print help'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand salvage" -l data -d 'Data folder made by `init`' -r -F
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand salvage" -l repair -d 'Fix what is found (otherwise only report)'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand salvage" -s h -l help -d 'Print help'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand help; and not __fish_seen_subcommand_from init serve salvage help" -f -a "init" -d 'Create a new cell: CA, credentials, client config, VLDB and root volume. With --join, add this machine\'s fileserver to an existing cell instead'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand help; and not __fish_seen_subcommand_from init serve salvage help" -f -a "serve" -d 'Serve a cell until SIGINT or SIGTERM'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand help; and not __fish_seen_subcommand_from init serve salvage help" -f -a "salvage" -d 'Check every volume\'s metadata against its data files, like the AFS salvager, and with --repair fix what is found. Refuses to run while a server serves the same folder. Exit status: 0 when clean (or clean after repair), 1 when problems remain'
complete -c cellfs-fileserver -n "__fish_cellfs_fileserver_using_subcommand help; and not __fish_seen_subcommand_from init serve salvage help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
