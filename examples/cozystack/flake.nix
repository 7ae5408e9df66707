{
  description = "nix8s example: Cozystack on one server and two agents";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    disko.url = "github:nix-community/disko";
    disko.inputs.nixpkgs.follows = "nixpkgs";
    nix8s.url = "github:nix8s/nix8s";
    nix8s.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = inputs@{ flake-parts, nix8s, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      imports = [ nix8s.flakeModules.default ];
      systems = [ "x86_64-linux" ];
      # The data part, generated from config.yaml by `nix8s import`.
      nix8s = import ./config.nix;
    };
}
