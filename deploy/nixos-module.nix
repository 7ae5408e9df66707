# NixOS module for nix8sd, the nix8s provisioning daemon: the service, its PostgreSQL, state directory,
# firewall for DHCP/TFTP/HTTP, API tokens as files, and what its install/rollout jobs run (nixos-anywhere,
# nixos-rebuild, ssh with checked host keys, cluster secrets). Exported by the flake as nixosModules.nix8sd.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.nix8sd;
  inherit (lib) mkEnableOption mkIf mkOption optional optionals optionalAttrs types literalExpression;
  localDb = cfg.database.createLocally;
  args = [ "serve" "--listen" "${cfg.listenAddress}:${toString cfg.port}" "--log-format" "json" ]
    ++ optionals (cfg.adminTokenFile != null) [ "--admin-token-file" "%d/admin-token" ]
    ++ optionals (cfg.readTokenFile != null) [ "--read-token-file" "%d/read-token" ]
    ++ optionals (cfg.flake != null) [ "--flake" cfg.flake ]
    ++ optionals (ops.nixosAnywhere != null) [ "--nixos-anywhere" "${ops.nixosAnywhere}/bin/nixos-anywhere" ]
    ++ optionals (ops.nixosRebuild != null) [ "--nixos-rebuild" "${ops.nixosRebuild}/bin/nixos-rebuild" ]
    ++ optionals (ops.secretsDir != null) [ "--secrets" ops.secretsDir ]
    ++ optionals (ops.knownHostsFile != null) [ "--known-hosts" ops.knownHostsFile ]
    ++ optionals (ops.sshConfigFile != null) [ "--ssh-config" ops.sshConfigFile ]
    ++ optionals (ops.jobs != null) [ "--jobs" (toString ops.jobs) ]
    ++ optionals (ops.jobTimeout != null) [ "--job-timeout" ops.jobTimeout ]
    ++ optionals pxe.enable ([ "--pxe" "--ipxe-dir" "${pxe.ipxe}" ]
      ++ lib.concatMap (a: [ "--pxe-boot-file" "${a}=${pxe.bootFiles.${a}}" ]) (builtins.attrNames pxe.bootFiles)
      ++ lib.concatMap (c: [ "--pxe-cluster" c ]) pxe.clusters
      ++ optionals (pxe.interface != null) [ "--pxe-interface" pxe.interface ]
      ++ optionals (pxe.ip != null) [ "--pxe-ip" pxe.ip ]
      ++ optionals (pxe.mode != null) [ "--pxe-mode" pxe.mode ]
      ++ optionals (pxe.machinePort != null) [ "--machine-listen" "${pxe.machineListenAddress}:${toString pxe.machinePort}" ]
      ++ optionals (!pxe.autoInstall) [ "--no-auto-install" ]
      ++ optionals (!pxe.discovery) [ "--discovery=false" ])
    ++ cfg.extraArgs;
  pxe = cfg.pxe;
  ops = cfg.operations;
in
{
  options.services.nix8sd = {
    enable = mkEnableOption "nix8sd, the nix8s provisioning daemon (inventory in PostgreSQL, REST API, machine states)";

    package = mkOption {
      type = types.package;
      description = "The nix8sd package (from the nix8s flake).";
      example = literalExpression "inputs.nix8s.packages.\${pkgs.system}.nix8sd";
    };

    listenAddress = mkOption {
      type = types.str;
      default = "0.0.0.0";
      example = "192.168.1.10";
      description = ''
        Address the REST API listens on. With `pxe.machinePort`, give an address of the operator network
        only, so that the provisioning LAN cannot reach the API at all (docs/security.md).
      '';
    };

    port = mkOption {
      type = types.port;
      default = 8080;
      description = "TCP port of the REST API (and, with the PXE services and no `pxe.machinePort`, of the netboot HTTP files and the machines' reports).";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/nix8sd";
      readOnly = true;
      description = ''
        State directory (systemd `StateDirectory=nix8sd`): the generated flake workspace and the evaluation
        cache; with `database.createLocally = false` and no URL, an embedded PostgreSQL.
      '';
    };

    database = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run the inventory database on this host: `services.postgresql` with a `nix8sd` database owned by a
          `nix8sd` role, reached over the unix socket with peer authentication (no password anywhere).
        '';
      };
      urlFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/nix8sd-database";
        description = ''
          A file holding `DATABASE_URL=postgres://...` (systemd EnvironmentFile) for a PostgreSQL elsewhere,
          shared by several daemons. Keep it out of the Nix store (sops-nix, agenix).
          **WARNING**: a path literal (`./db.env`) would copy the file, password included, into the
          world-readable Nix store; give a string path.
        '';
      };
    };

    adminTokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/nix8sd-admin-token";
      description = ''
        A file holding an admin API token (`nix8sd token create --print-only`) that the daemon accepts; it is
        stored hashed. Passed with systemd `LoadCredential`, so it may be readable by root only.
        **WARNING**: never a path literal or inline value: the Nix store is world-readable.
      '';
    };

    readTokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Like `adminTokenFile`, for a read-only token (monitoring, dashboards).";
    };

    flake = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/srv/infra";
      description = ''
        Your own flake directory: the daemon writes its inventory there as `inventory.json`, which your
        `flake.nix` passes as `nix8s.inventoryFile`. Default: a generated flake in the state directory.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open DHCP (67/udp, and 4011/udp for proxy mode), TFTP (69/udp), the API/HTTP port (`port`/tcp) and `pxe.machinePort`/tcp, on every interface.";
    };

    # Network boot (docs/pxe.md). Interface, address and DHCP mode default to the inventory's
    # provisioning.pxe.server.
    pxe = {
      enable = mkEnableOption "network boot: DHCP (proxy or full mode), TFTP and iPXE by MAC, installer and discovery images built from the flake";
      clusters = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Network-boot the members of these clusters only (`--pxe-cluster`); empty: every cluster.";
      };
      interface = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "eno1";
        description = "Interface to serve (`--pxe-interface`); default `provisioning.pxe.server.interface`.";
      };
      ip = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "This host's address on that interface (`--pxe-ip`); default `provisioning.pxe.server.ip`.";
      };
      machinePort = mkOption {
        type = types.nullOr types.port;
        default = null;
        example = 8081;
        description = ''
          Serve the machine-facing endpoints (`/boot`, `/machine/v1`) on a listener of their own
          (`--machine-listen`), with its own connection caps, and hand machines URLs with this port; the
          `port` listener then serves only the operator API, health and metrics. Then a flood from the
          provisioning LAN (many addresses holding slow image downloads) cannot take the operator API's
          connections. `null`: one listener on `port` for both (the default, so existing firewall rules and
          installs in progress keep working). Pass its caps and timeouts (`--machine-http-*`) in `extraArgs`.
        '';
      };
      machineListenAddress = mkOption {
        type = types.str;
        default = "0.0.0.0";
        example = "10.0.0.1";
        description = "Address of the `machinePort` listener: this host's address on the provisioning LAN (`ip`) keeps it off the other networks.";
      };
      mode = mkOption {
        type = types.nullOr (types.enum [ "proxy" "full" ]);
        default = null;
        description = "DHCP mode (`--pxe-mode`); default `provisioning.pxe.server.dhcp.mode`, else proxy.";
      };
      ipxe = mkOption {
        type = types.package;
        # The booted machines are x86-64; nixpkgs' ipxe (pkgs/by-name/ip/ipxe/package.nix) has undionly.kpxe and
        # the x86-64 ipxe.efi only when built for x86-64 (see modules/flake/pxe.nix).
        default = if pkgs.stdenv.hostPlatform.isx86_64 then pkgs.ipxe else pkgs.pkgsCross.gnu64.ipxe;
        defaultText = literalExpression "pkgs.ipxe (x86-64 hosts), pkgs.pkgsCross.gnu64.ipxe (others)";
        description = ''
          Directory of iPXE binaries served over TFTP and HTTP (`--ipxe-dir`): `undionly.kpxe` for BIOS, the first
          of `snponly.efi`, `snp.efi`, `ipxe.efi` for x86-64 UEFI, and, when present, `snp-arm64.efi` or
          `ipxe-arm64.efi` for ARM64 UEFI (see `bootFiles`).
        '';
        example = literalExpression ''
          # x86-64 and ARM64 machines: nixpkgs' x86-64 iPXE plus the ARM64 snp.efi under a name of its own
          pkgs.runCommand "ipxe-x86-arm64" { } '''
            mkdir $out
            ln -s ''${pkgs.ipxe}/* $out/
            ln -s ''${pkgs.pkgsCross.aarch64-multiplatform.ipxe}/snp.efi $out/snp-arm64.efi
          '''
        '';
      };
      bootFiles = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = { "11" = "snp-arm64.efi"; "19" = "snp-arm64.efi"; "0" = ""; };
        description = ''
          Boot file of `ipxe` for clients of each architecture, by DHCP option 93 number (`--pxe-boot-file`):
          0 x86 BIOS, 6/15 32-bit x86 UEFI PXE/HTTP, 7/9 x86-64 UEFI PXE, 16 x86-64 HTTP boot, 11/19 ARM64 UEFI
          PXE/HTTP. Overrides the defaults (see `ipxe`); `""` offers that architecture nothing. A client whose
          architecture has no file gets no answer and tries its next boot device.
        '';
      };
      autoInstall = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Install an assigned machine when it boots from the network, in its turn of the join order. When
          false, only `POST /v1/machines/{mac}/reinstall` arms an install (`--no-auto-install`).
        '';
      };
      discovery = mkOption {
        type = types.bool;
        default = true;
        description = "Boot unknown machines into the discovery image (false: they fall through to their next boot device).";
      };
    };

    logLevel = mkOption {
      type = types.enum [ "debug" "info" "warn" "error" ];
      default = "info";
      description = "Log level of the structured (JSON) logs.";
    };

    # The install and rollout jobs (docs/daemon.md, "Operations (jobs)"). The ssh user, port and key come
    # from the inventory's provisioning.nixos-anywhere.ssh; the key file must be readable by the nix8sd user.
    operations = {
      nixosAnywhere = mkOption {
        type = types.nullOr types.package;
        default = pkgs.nixos-anywhere;
        defaultText = literalExpression "pkgs.nixos-anywhere";
        description = "The nixos-anywhere that install jobs run (`--nixos-anywhere`); `null`: the one on the service's PATH.";
      };
      nixosRebuild = mkOption {
        type = types.nullOr types.package;
        default = pkgs.nixos-rebuild;
        defaultText = literalExpression "pkgs.nixos-rebuild";
        description = "The nixos-rebuild that rollout jobs run (`--nixos-rebuild`); `null`: the one on the service's PATH.";
      };
      secretsDir = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/nix8sd-secrets";
        description = ''
          Directory of the clusters' tokens, `<cluster>.yaml` as `nix8s gen-secrets` writes them (`--secrets`),
          readable by the nix8sd user. Default: `secrets` in the state directory; `"none"` delivers no token files.
          **WARNING**: give a string path, never a path literal (`./secrets`): that would copy the tokens into
          the world-readable Nix store.
        '';
      };
      knownHostsFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/nix8sd/known_hosts";
        description = ''
          known_hosts file the members' host keys are checked against (`--known-hosts`). Default: the nix8sd
          user's `~/.ssh/known_hosts` in the state directory (and the system's `/etc/ssh/ssh_known_hosts`,
          which `programs.ssh.knownHosts` fills). Host keys are always checked.
        '';
      };
      sshConfigFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "none";
        description = "File passed to `ssh -F` (`--ssh-config`); `\"none\"` ignores every ssh config file. Default: ssh's own.";
      };
      jobs = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 4;
        description = "How many jobs this daemon runs at once (`--jobs`); default the daemon's (2).";
      };
      jobTimeout = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "4h";
        description = "A job still running after this Go duration fails (`--job-timeout`); default the daemon's (2h).";
      };
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments to `nix8sd serve` (other flags: `nix8sd serve -h`).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [{
      assertion = localDb -> cfg.database.urlFile == null;
      message = "services.nix8sd: set database.createLocally = false to use database.urlFile";
    }
      {
        assertion = pxe.machinePort != cfg.port;
        message = "services.nix8sd: pxe.machinePort must differ from port (${toString cfg.port}); set it to another port, or to null to serve machines on port";
      }];

    services.postgresql = mkIf localDb {
      enable = true;
      ensureDatabases = [ "nix8sd" ];
      ensureUsers = [{ name = "nix8sd"; ensureDBOwnership = true; }];
    };

    users.users.nix8sd = {
      isSystemUser = true;
      group = "nix8sd";
      home = cfg.stateDir;
    };
    users.groups.nix8sd = { };

    networking.firewall = mkIf cfg.openFirewall {
      allowedUDPPorts = [ 67 69 ] ++ optional pxe.enable 4011;
      allowedTCPPorts = [ cfg.port ] ++ optional (pxe.enable && pxe.machinePort != null) pxe.machinePort;
    };

    systemd.services.nix8sd = {
      description = "nix8sd, the nix8s provisioning daemon";
      documentation = [ "https://github.com/nix8s/nix8s/blob/main/docs/daemon.md" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ] ++ optional localDb "postgresql.service";
      requires = optional localDb "postgresql.service";
      # The core is evaluated with nix-instantiate (and installer images built with nix); the jobs reach
      # members with the system ssh.
      path = [ config.nix.package pkgs.openssh ];
      environment = {
        NIX8S_STATE_DIR = cfg.stateDir;
        NIX8S_LOG_LEVEL = cfg.logLevel;
      } // optionalAttrs localDb {
        DATABASE_URL = "postgres:///nix8sd?host=/run/postgresql";
      };
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/nix8sd ${lib.escapeShellArgs args}";
        User = "nix8sd";
        Group = "nix8sd";
        StateDirectory = "nix8sd";
        StateDirectoryMode = "0750";
        EnvironmentFile = optional (cfg.database.urlFile != null) cfg.database.urlFile;
        LoadCredential = optional (cfg.adminTokenFile != null) "admin-token:${cfg.adminTokenFile}"
          ++ optional (cfg.readTokenFile != null) "read-token:${cfg.readTokenFile}";
        # DHCP and TFTP bind ports below 1024; DHCP answers need raw sockets.
        AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" "CAP_NET_RAW" ];
        CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" "CAP_NET_RAW" ];
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        ReadWritePaths = optional (cfg.flake != null) cfg.flake;
        Restart = "on-failure";
        RestartSec = 5;
        # SIGTERM: finish in-flight requests (nix8sd --shutdown-timeout, 20s), then exit.
        TimeoutStopSec = 30;
      };
    };
  };
}
