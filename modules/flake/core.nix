# The nix8s options of a flake: nodes, clusters and provisioning as freeform data with typed, documented
# options for the fields nix8s itself reads. Validation and planning are the pure core's (lib/); this module
# only declares, merges the daemon's inventory file in, and exposes the resolved config to the other modules.
{ lib, config, ... }:
let
  inherit (lib) mkOption types;
  core = import ../../lib;
  cfg = config.nix8s;

  freeform = types.lazyAttrsOf types.anything;

  # Descriptions and examples come from the core's JSON Schema (lib/schema.nix), the one source of field
  # documentation (docs/options.md is generated from it too). `path` names a field there; `"*"` stands for any
  # name (a node, a cluster, a member).
  fromSchema = path:
    let
      at = s: k:
        if k == "*" then s.additionalProperties
        else s.properties.${k} or (throw "nix8s: modules/flake/core.nix: ${builtins.concatStringsSep "." path} is not in lib/schema.nix");
      s = builtins.foldl' at core.schema path;
    in
    { inherit (s) description; } // (if s ? examples then { example = builtins.head s.examples; } else { });

  # An optional typed field: null means "not set" and is pruned before the config reaches the core.
  field = type: path: mkOption ({ type = types.nullOr type; default = null; } // fromSchema path);

  # A namespace of typed fields that also accepts any other attribute.
  section = path: options: mkOption ({
    type = types.submodule { freeformType = freeform; inherit options; };
    default = { };
  } // fromSchema path);

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
      network = section [ "nodes" "*" "network" ] {
        mac = field types.str [ "nodes" "*" "network" "mac" ];
        interface = field types.str [ "nodes" "*" "network" "interface" ];
      };
      system = field types.str [ "nodes" "*" "system" ];
      install = section [ "nodes" "*" "install" ] {
        disk = field types.str [ "nodes" "*" "install" "disk" ];
        swapSize = field types.str [ "nodes" "*" "install" "swapSize" ];
      };
      disko = field freeform [ "nodes" "*" "disko" ];
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
      node = field (types.either types.str freeform) [ "clusters" "*" "members" "*" "node" ];
      # One of server/agent, checked by the core (see `ipv4` above for why this is not an enum).
      role = field (types.str // { description = "\"server\" or \"agent\""; }) [ "clusters" "*" "members" "*" "role" ];
      ip = field ipv4 [ "clusters" "*" "members" "*" "ip" ];
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
      k3s = section [ "clusters" "*" "k3s" ] {
        version = field types.str [ "clusters" "*" "k3s" "version" ];
      };
      ha = section [ "clusters" "*" "ha" ] {
        enable = field types.bool [ "clusters" "*" "ha" "enable" ];
        vip = field ipv4 [ "clusters" "*" "ha" "vip" ];
        firstServer = field types.str [ "clusters" "*" "ha" "firstServer" ];
        interface = field types.str [ "clusters" "*" "ha" "interface" ];
        loadBalancer = field types.str [ "clusters" "*" "ha" "loadBalancer" ];
      };
      secrets = section [ "clusters" "*" "secrets" ] {
        tokenFile = field types.str [ "clusters" "*" "secrets" "tokenFile" ];
        agentTokenFile = field types.str [ "clusters" "*" "secrets" "agentTokenFile" ];
        token = field types.str [ "clusters" "*" "secrets" "token" ];
      };
      members = mkOption ({
        type = types.attrsOf (types.submodule memberOptions);
        default = { };
      } // fromSchema [ "clusters" "*" "members" ]);
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
    nodes = mkOption ({
      type = types.attrsOf (types.submodule nodeOptions);
      default = { };
    } // fromSchema [ "nodes" ]);
    clusters = mkOption ({
      type = types.attrsOf (types.submodule clusterOptions);
      default = { };
    } // fromSchema [ "clusters" ]);
    provisioning = mkOption ({
      type = types.submodule { freeformType = freeform; };
      default = { };
    } // fromSchema [ "provisioning" ]);
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
