# The nix8s options of a flake: nodes, clusters and provisioning as freeform data with typed, documented
# options for the fields nix8s itself reads. Validation and planning are the pure core's (lib/); this module
# only declares, merges the daemon's inventory file in, and exposes the resolved config to the other modules.
{ lib, config, ... }:
let
  inherit (lib) mkOption types;
  core = import ../../lib;
  cfg = config.nix8s;

  freeform = types.lazyAttrsOf types.anything;

  # An optional typed field: null means "not set" and is pruned before the config reaches the core.
  field = type: description: extra: mkOption ({ type = types.nullOr type; default = null; inherit description; } // extra);

  # A namespace of typed fields that also accepts any other attribute.
  section = description: options: mkOption {
    type = types.submodule { freeformType = freeform; inherit options; };
    default = { };
    inherit description;
  };

  # Fields are typed loosely (strings, not patterns or enums) on purpose: the core checks their values and
  # reports every problem at once with its path, where a module-system type error would stop at the first.
  ipv4 = types.str // { description = "IPv4 address"; };

  nodeOptions = { name, ... }: {
    freeformType = freeform;
    options = {
      _nix8sName = mkOption {
        type = types.str;
        default = name;
        readOnly = true;
        internal = true;
        description = "The template's name, so that `node = config.nix8s.nodes.x` can be resolved to \"x\".";
      };
      network = section "Network identity of the machine." {
        mac = field types.str "MAC address of the boot interface; PXE matches machines by it." { example = "aa:bb:cc:dd:ee:01"; };
        interface = field types.str "Primary interface; without it the member's address goes on eth0 (classic names)." { example = "enp1s0"; };
      };
      system = field types.str ''
        The machine's platform, as nixpkgs names it; without it `x86_64-linux`. Lima VMs on Apple silicon are
        `aarch64-linux`.
      '' { example = "aarch64-linux"; };
      install = section "Standard disk layout: GPT, 512M ESP on /boot, optional swap, ext4 root. Exclusive with `disko`." {
        disk = field types.str "Root disk." { example = "/dev/nvme0n1"; };
        swapSize = field types.str "Swap partition size." { example = "16G"; };
      };
      disko = field freeform "Your own disko configuration (`{ devices = …; }`), instead of `install.disk`." { };
      nixosModules = mkOption {
        type = types.listOf types.deferredModule;
        default = [ ];
        description = "NixOS modules added to every member made from this template (Nix only: not in the YAML export).";
      };
    };
  };

  memberOptions = {
    freeformType = freeform;
    options = {
      # Required, but left null here: a member may be declared partly in Nix over the inventory file, and the
      # core names every missing field at once.
      node = field (types.either types.str freeform)
        "The node template: its name, or the template itself (`config.nix8s.nodes.x`). Required."
        { example = "server-nvme"; };
      # One of server/agent, checked by the core (see `ipv4` above for why this is not an enum).
      role = field (types.str // { description = "\"server\" or \"agent\""; })
        "k3s role: `server` (control plane and etcd; also runs workloads) or `agent`. Required."
        { example = "server"; };
      ip = field ipv4 "The member's IPv4 address (static, on `network.interface`). Required." { example = "192.168.1.10"; };
      nixosModules = mkOption {
        type = types.listOf types.deferredModule;
        default = [ ];
        description = "NixOS modules for this member only (Nix only).";
      };
    };
  };

  clusterOptions = {
    freeformType = freeform;
    options = {
      k3s = section "k3s settings (also `network`, `extraArgs.server`, `extraArgs.agent`)." {
        version = field types.str "k3s release, as k3s names them; `v1.34.x` selects `pkgs.k3s_1_34`." { example = "v1.34.2+k3s1"; };
      };
      ha = section "High availability of the API." {
        enable = field types.bool "Run several servers behind a virtual IP." { };
        vip = field ipv4 "Virtual IP of the API (required with more than one server)." { example = "192.168.1.100"; };
        firstServer = field types.str "The server that initialises the cluster; default: the alphabetically first." { };
        interface = field types.str "Interface keepalived puts the VIP on." { };
        loadBalancer = field types.str "`keepalived`: keepalived + haproxy on the servers (default), or an external load balancer." { };
      };
      secrets = section "Where the k3s tokens are on the nodes." {
        tokenFile = field types.str "Path of the cluster token file on servers (e.g. from sops-nix)." { example = "/run/secrets/k3s-token"; };
        agentTokenFile = field types.str "Path of the agent token file." { };
        token = field types.str ''
          The cluster token itself.

          **WARNING**: it is copied into the world-readable Nix store. Use `tokenFile` instead.
        '' { };
      };
      members = mkOption {
        type = types.attrsOf (types.submodule memberOptions);
        default = { };
        description = "Members by name: each becomes `nixosConfigurations.<cluster>-<member>`.";
      };
    };
  };

  # Declared fields left at null, and sections left empty, are dropped: the core sees what the user wrote.
  prune = v:
    if builtins.isAttrs v && !(v ? _type) && !(lib.isDerivation v) then
      lib.filterAttrs (n: x: x != null && x != { } && !(n == "nixosModules" && x == [ ]))
        # disko's own format is passed through untouched.
        (lib.mapAttrs (n: x: if n == "disko" then x else prune x) v)
    else v;

  fromFile = if cfg.inventoryFile == null then { } else builtins.fromJSON (builtins.readFile cfg.inventoryFile);
  merged = lib.recursiveUpdate fromFile (prune { inherit (cfg) nodes clusters provisioning; });
in
{
  options.nix8s = {
    nodes = mkOption {
      type = types.attrsOf (types.submodule nodeOptions);
      default = { };
      description = "Hardware templates by name.";
    };
    clusters = mkOption {
      type = types.attrsOf (types.submodule clusterOptions);
      default = { };
      description = "k3s clusters by name.";
    };
    provisioning = mkOption {
      type = types.submodule { freeformType = freeform; };
      default = { };
      description = "How machines are deployed: `ssh`, `nixos-anywhere`, `pxe`, `lima`.";
    };
    nixosModulesFor = mkOption {
      type = types.attrsOf (types.listOf types.deferredModule);
      default = { };
      description = ''
        NixOS modules for one member, by `<cluster>-<member>`. Extension modules write here and never read it;
        users add modules through `nodes.<n>.nixosModules`.
      '';
    };
    inventoryFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        A JSON file in the shape of the config (as nix8sd writes it). It is merged under the Nix-declared
        config: what the flake declares wins.
      '';
    };
    resolved = mkOption {
      type = types.raw;
      readOnly = true;
      internal = true;
      description = "The config the core sees: the inventory file, then the Nix declarations, null fields pruned.";
    };
    evaluated = mkOption {
      type = types.raw;
      readOnly = true;
      internal = true;
      description = ''
        The core's one evaluation of `resolved` (`core.evaluate`): `report`, `plan`, `nixos` (the NixOS data by
        host) and `exportable`. Every nix8s module reads these, so a flake evaluation validates and plans once.
      '';
    };
  };

  config.nix8s.evaluated =
    let
      e = core.evaluate merged;
      # Reading any result first fails with every error, or prints the warnings, once (through resolved).
      afterChecks = builtins.seq cfg.resolved;
    in {
      inherit (e) report;
      plan = afterChecks e.plan;
      nixos = afterChecks e.nixos;
      exportable = afterChecks e.exportable;
    };

  config.nix8s.resolved =
    let report = cfg.evaluated.report; in
    # Flake-parts has no assertions: fail here with every error at once, print the warnings.
    if report.errors != [ ] then throw (core.errorMessage report.errors)
    else lib.foldr (w: acc: lib.warn "nix8s: ${w.path}: ${w.message}" acc) merged report.warnings;
}
