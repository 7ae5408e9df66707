{
  description = "nix8s example: HA cluster (3 servers behind a VIP) with GPU and storage agents";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    disko.url = "github:nix-community/disko";
    disko.inputs.nixpkgs.follows = "nixpkgs";
    nix8s.url = "github:nix8s/nix8s";
    nix8s.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = inputs@{ flake-parts, nix8s, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } ({ config, ... }: {
      imports = [
        nix8s.flakeModules.default
        # The data part, generated from config.yaml by `nix8s import`.
        { nix8s = import ./config.nix; }
      ];
      systems = [ "x86_64-linux" ];

      # Nix-only extras on top of the data (design 2.2, 3.4): a NixOS module for every server made from the
      # server-nvme template, and one more GPU agent that references its template by value.
      nix8s.nodes.server-nvme.nixosModules = [ ./server-tuning.nix ];
      nix8s.clusters.prod.members.agent-gpu-3 = {
        node = config.nix8s.nodes.agent-gpu;
        role = "agent";
        ip = "192.168.1.22";
        network.mac = "aa:bb:cc:dd:ee:22";
      };
    });
}
