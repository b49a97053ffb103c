package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hivefleet/hive/coordinator/fsm"
)

// Recover rewrites the raft configuration in a stopped server's data
// directory so that the server, started again, forms a one-server cluster
// of its own with everything its log and snapshots hold. It is the
// disaster-recovery step when a majority of the servers is lost for good
// (docs/operations.md): the survivor keeps every entry it had committed,
// possibly missing the very last entries only the lost servers had.
// Other servers are then added back by joining it.
//
// The server must not be running (the raft log file is locked).
func Recover(dataDir, name, raftAddr string, log *slog.Logger) error {
	if dataDir == "" || name == "" || raftAddr == "" {
		return errors.New("recover needs the data dir, the server name and its raft address")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("open raft log (is the server still running?): %w", err)
	}
	defer store.Close()
	hl := newHCLog(log.With("component", "raft"), "recover")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, hl)
	if err != nil {
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(name)
	rc.Logger = hl
	_, trans := raft.NewInmemTransport(raft.ServerAddress(raftAddr))
	defer trans.Close()
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(name), Address: raft.ServerAddress(raftAddr), Suffrage: raft.Voter}}}
	if err := raft.RecoverCluster(rc, fsm.New(log), store, store, snaps, trans, conf); err != nil {
		return fmt.Errorf("recover raft configuration: %w", err)
	}
	log.Info("raft configuration rewritten: this server alone", "name", name, "raft", raftAddr)
	return nil
}
