//! The one codec: bincode 1.3 behind a bounded, length-prefixed frame.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! bincode. The length is checked against a bound before anything is
//! allocated, and bincode itself is limited to the same bound so a forged
//! collection length cannot make the decoder allocate more.

use bincode::Options;
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted by default (64 MiB: a directory of ~300,000 entries).
pub const MAX_FRAME: u32 = 64 << 20;

/// Errors from encoding, decoding or moving frames.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer announced a frame larger than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: u64 },
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] bincode::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// I/O on the stream failed.
    #[error("stream I/O: {0}")]
    Io(#[source] std::io::Error),
}

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_limit(limit).reject_trailing_bytes()
}

/// Encodes `msg` to bytes (no length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    Ok(options(u64::from(MAX_FRAME)).serialize(msg)?)
}

/// Decodes one message from exactly `bytes`; never panics, whatever `bytes` hold.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(options(bytes.len() as u64 + 64).deserialize(bytes)?)
}

/// Writes one length-prefixed frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<(), CodecError> {
    let body = encode(msg)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or(CodecError::TooLarge {
            len: body.len() as u64,
            max: u64::from(MAX_FRAME),
        })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await.map_err(CodecError::Io)
}

/// Reads one length-prefixed frame of at most `max` bytes and decodes it.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R, max: u32) -> Result<T, CodecError> {
    let mut len = [0u8; 4];
    read_exact(r, &mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(CodecError::TooLarge {
            len: u64::from(len),
            max: u64::from(max),
        });
    }
    let mut body = vec![0u8; len as usize];
    read_exact(r, &mut body).await?;
    decode(&body)
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), CodecError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(CodecError::Truncated),
        Err(e) => Err(CodecError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Break, InlineFile, LockMode, LockOp, Renewal, Reply, Request, ServerMessage};
    use crate::types::*;
    use crate::{ErrorCode, RpcError};
    use proptest::prelude::*;

    fn fid() -> impl Strategy<Value = Fid> {
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(volume, vnode, unique)| Fid { volume, vnode, unique })
    }

    fn ts() -> impl Strategy<Value = Timestamp> {
        (any::<i64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
    }

    fn kind() -> impl Strategy<Value = FileKind> {
        prop_oneof![
            Just(FileKind::File),
            Just(FileKind::Dir),
            Just(FileKind::Symlink),
            Just(FileKind::MountPoint),
            special().prop_map(FileKind::Special)
        ]
    }

    fn special() -> impl Strategy<Value = Special> {
        prop_oneof![
            Just(Special::Fifo),
            Just(Special::Socket),
            any::<u64>().prop_map(Special::CharDevice),
            any::<u64>().prop_map(Special::BlockDevice)
        ]
    }

    fn status() -> impl Strategy<Value = Status> {
        (
            fid(),
            kind(),
            any::<u32>(),
            any::<u32>(),
            any::<(u32, u32)>(),
            any::<(u64, u64)>(),
            ts(),
            ts(),
            ts(),
        )
            .prop_map(
                |(fid, kind, mode, nlink, (uid, gid), (size, data_version), mtime, ctime, atime)| Status {
                    fid,
                    kind,
                    mode,
                    nlink,
                    uid,
                    gid,
                    size,
                    data_version,
                    mtime,
                    ctime,
                    atime,
                    acl_dir: fid.vnode,
                },
            )
    }

    fn name() -> impl Strategy<Value = String> {
        ".{0,40}"
    }

    fn code() -> impl Strategy<Value = ErrorCode> {
        prop_oneof![
            Just(ErrorCode::NotFound),
            Just(ErrorCode::Exists),
            Just(ErrorCode::QuotaExceeded),
            Just(ErrorCode::CrossVolume),
            Just(ErrorCode::BadRequest),
            Just(ErrorCode::ReadOnly),
            Just(ErrorCode::Busy),
            Just(ErrorCode::Corrupt),
            Just(ErrorCode::Moved),
            Just(ErrorCode::Grace),
            Just(ErrorCode::Changed),
        ]
    }

    fn volume_kind() -> impl Strategy<Value = VolumeKind> {
        prop_oneof![
            Just(VolumeKind::ReadWrite),
            Just(VolumeKind::Backup),
            Just(VolumeKind::ReadOnly)
        ]
    }

    fn volume() -> impl Strategy<Value = VolumeInfo> {
        let admin = (
            volume_kind(),
            proptest::option::of(name()),
            (proptest::option::of(ts()), proptest::option::of(ts())),
            proptest::option::of((name(), ts()).prop_map(|(holder, since)| VolumeLock { holder, since })),
            proptest::collection::vec(name(), 0..3),
        );
        (
            any::<u64>(),
            name(),
            (
                any::<(u64, u64, u64)>(),
                proptest::option::of(any::<(u64, u64)>().prop_map(|(total, avail)| DiskSpace { total, avail })),
            ),
            name(),
            ts(),
            ts(),
            admin,
        )
            .prop_map(
                |(
                    id,
                    name,
                    ((quota, used, files), disk),
                    server,
                    created,
                    updated,
                    (kind, parent, (backup_time, last_release), lock, sites),
                )| {
                    VolumeInfo {
                        id,
                        name,
                        quota,
                        used,
                        files,
                        server,
                        created,
                        updated,
                        kind,
                        parent,
                        backup_time,
                        lock,
                        sites,
                        last_release,
                        disk,
                    }
                },
            )
    }

    fn setattr() -> impl Strategy<Value = SetAttr> {
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(ts()),
            proptest::option::of(ts()),
        )
            .prop_map(|(mode, uid, gid, size, atime, mtime)| SetAttr {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
            })
    }

    fn request() -> impl Strategy<Value = Request> {
        let a = prop_oneof![
            Just(Request::Ping),
            Just(Request::Hello),
            Just(Request::Stats),
            name().prop_map(|volume| Request::GetRoot { volume }),
            fid().prop_map(|fid| Request::FetchStatus { fid }),
            proptest::collection::vec(fid(), 0..5).prop_map(|fids| Request::BulkStatus { fids }),
            (fid(), name()).prop_map(|(dir, name)| Request::Lookup { dir, name }),
            fid().prop_map(|dir| Request::ReadDir { dir }),
            fid().prop_map(|fid| Request::FetchData { fid }),
            (
                fid(),
                any::<(u64, u64)>(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(ts()),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(fid, (offset, len), truncate, mtime, expect)| Request::StoreData {
                    fid,
                    offset,
                    len,
                    truncate,
                    mtime,
                    expect
                }),
            (fid(), setattr()).prop_map(|(fid, attr)| Request::SetAttr { fid, attr }),
            (fid(), name(), any::<(u32, u32, u32)>(), any::<bool>()).prop_map(
                |(dir, name, (mode, uid, gid), exclusive)| Request::Create {
                    dir,
                    name,
                    mode,
                    uid,
                    gid,
                    exclusive
                }
            ),
        ];
        let b = prop_oneof![
            (fid(), name(), any::<(u32, u32, u32)>()).prop_map(|(dir, name, (mode, uid, gid))| Request::MakeDir {
                dir,
                name,
                mode,
                uid,
                gid
            }),
            (fid(), name(), name(), any::<(u32, u32)>()).prop_map(|(dir, name, target, (uid, gid))| Request::Symlink {
                dir,
                name,
                target,
                uid,
                gid
            }),
            (fid(), name(), special(), any::<(u32, u32, u32)>()).prop_map(|(dir, name, special, (mode, uid, gid))| {
                Request::MakeSpecial {
                    dir,
                    name,
                    special,
                    mode,
                    uid,
                    gid,
                }
            }),
            (fid(), name(), fid()).prop_map(|(dir, name, fid)| Request::Link { dir, name, fid }),
            fid().prop_map(|fid| Request::Sync { fid }),
            (any::<u64>(), any::<u32>()).prop_map(|(volume, count)| Request::ReserveFids { volume, count }),
            (fid(), name(), fid(), any::<(u32, u32, u32)>()).prop_map(|(dir, name, fid, (mode, uid, gid))| {
                Request::CreateReserved {
                    dir,
                    name,
                    fid,
                    mode,
                    uid,
                    gid,
                }
            }),
            (fid(), name()).prop_map(|(dir, name)| Request::Remove { dir, name }),
            (fid(), name()).prop_map(|(dir, name)| Request::RemoveDir { dir, name }),
            (fid(), name(), fid(), name()).prop_map(|(from_dir, from_name, to_dir, to_name)| Request::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name
            }),
            fid().prop_map(|fid| Request::ReadLink { fid }),
            any::<u64>().prop_map(|volume| Request::GetVolumeStatus { volume }),
            proptest::collection::vec(fid(), 0..5).prop_map(|fids| Request::GiveUpCallbacks { fids }),
            (name(), any::<u64>(), proptest::option::of(name()))
                .prop_map(|(name, quota, server)| { Request::CreateVolume { name, quota, server } }),
            Just(Request::ListVolumes),
            name().prop_map(|name| Request::ExamineVolume { name }),
            name().prop_map(|name| Request::RemoveVolume { name }),
            (name(), any::<u64>()).prop_map(|(name, quota)| Request::SetQuota { name, quota }),
            (fid(), name(), name(), any::<bool>()).prop_map(|(dir, name, volume, read_write)| Request::MakeMount {
                dir,
                name,
                volume,
                read_write
            }),
            (any::<(u64, u64, u64)>(), proptest::collection::vec(fid(), 0..5)).prop_map(
                |((volume, incarnation, since), fids)| Request::Reconnect {
                    volume,
                    incarnation,
                    since,
                    fids
                }
            ),
            (proptest::collection::vec(fid(), 0..5), any::<(u64, u64)>()).prop_map(|(fids, (max_file, max_total))| {
                Request::FetchFiles {
                    fids,
                    max_file,
                    max_total,
                }
            }),
        ];
        let c =
            prop_oneof![
                (name(), name()).prop_map(|(name, new_name)| Request::RenameVolume { name, new_name }),
                (name(), name()).prop_map(|(name, holder)| Request::LockVolume { name, holder }),
                name().prop_map(|name| Request::UnlockVolume { name }),
                name().prop_map(|name| Request::BackupVolume { name }),
                (name(), any::<bool>()).prop_map(|(volume, read_write)| Request::GetMountRoot { volume, read_write }),
                (name(), name()).prop_map(|(name, server)| Request::AddSite { name, server }),
                (name(), name()).prop_map(|(name, server)| Request::RemoveSite { name, server }),
                name().prop_map(|name| Request::Release { name }),
                Just(Request::SyncVldb),
                (name(), proptest::option::of(ts())).prop_map(|(name, since)| Request::DumpVolume { name, since }),
                (name(), any::<u64>(), any::<bool>(), proptest::option::of(name())).prop_map(
                    |(name, len, overwrite, server)| Request::RestoreVolume {
                        name,
                        len,
                        overwrite,
                        server
                    }
                ),
                any::<u64>().prop_map(|volume| Request::LocateVolume { volume }),
                name().prop_map(|address| Request::RegisterServer { address }),
                (name(), any::<(u64, u64)>(), volume_kind())
                    .prop_map(|(name, (id, len), kind)| Request::InstallVolume { name, id, kind, len }),
                (name(), name()).prop_map(|(name, to)| Request::MoveVolume { name, to }),
                (fid(), lock_op()).prop_map(|(fid, op)| Request::Lock { fid, op }),
            ];
        prop_oneof![a, b, c]
    }

    fn lock_mode() -> impl Strategy<Value = LockMode> {
        prop_oneof![Just(LockMode::Shared), Just(LockMode::Exclusive)]
    }

    fn lock_op() -> impl Strategy<Value = LockOp> {
        prop_oneof![
            lock_mode().prop_map(LockOp::Acquire),
            lock_mode().prop_map(LockOp::Test),
            Just(LockOp::Release)
        ]
    }

    fn reply() -> impl Strategy<Value = Result<Reply, RpcError>> {
        let ok = prop_oneof![
            Just(Reply::Ok),
            proptest::option::of(lock_mode()).prop_map(|conflict| Reply::Lock { conflict }),
            proptest::collection::vec(fid(), 0..4).prop_map(Reply::Fids),
            (name(), name(), any::<(u64, u64)>(), name()).prop_map(
                |(cell, root_volume, (promise_secs, max_data), address)| Reply::Hello {
                    cell,
                    root_volume,
                    promise_secs,
                    max_data,
                    address,
                }
            ),
            any::<(u64, u64, u64, u64)>().prop_map(|(rpcs, breaks_sent, promises, connections)| Reply::Stats(Stats {
                rpcs,
                breaks_sent,
                promises,
                connections
            })),
            status().prop_map(Reply::Status),
            proptest::collection::vec(
                prop_oneof![
                    status().prop_map(Ok),
                    (code(), name()).prop_map(|(c, m)| Err(RpcError::new(c, m)))
                ],
                0..4
            )
            .prop_map(Reply::BulkStatus),
            (status(), proptest::collection::vec((name(), status()), 0..4), 0u8..128).prop_map(|(dir, e, r)| {
                Reply::Dir {
                    dir,
                    entries: e.into_iter().map(|(name, status)| DirEntry { name, status }).collect(),
                    rights: crate::acl::Rights(r),
                }
            }),
            status().prop_map(|status| Reply::Data { status }),
            (status(), status()).prop_map(|(dir, status)| Reply::Created { dir, status }),
            (status(), proptest::option::of(status())).prop_map(|(dir, victim)| Reply::Removed { dir, victim }),
            (status(), status(), status(), proptest::option::of(status())).prop_map(
                |(from_dir, to_dir, moved, replaced)| Reply::Renamed {
                    from_dir,
                    to_dir,
                    moved,
                    replaced
                }
            ),
            name().prop_map(Reply::Link),
            volume().prop_map(Reply::Volume),
            proptest::collection::vec(volume(), 0..3).prop_map(Reply::Volumes),
            (
                any::<(u64, u64)>(),
                proptest::option::of(proptest::collection::vec(fid(), 0..5))
            )
                .prop_map(|((incarnation, current), changed)| Reply::Reconnected {
                    incarnation,
                    current,
                    changed
                }),
            proptest::collection::vec(
                prop_oneof![
                    (
                        status(),
                        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16))
                    )
                        .prop_map(|(status, data)| Ok(InlineFile { status, data })),
                    (code(), name()).prop_map(|(c, m)| Err(RpcError::new(c, m)))
                ],
                0..3
            )
            .prop_map(Reply::Files),
            any::<u64>().prop_map(|len| Reply::Dump { len }),
            proptest::collection::vec(name(), 0..3).prop_map(Reply::Report),
            (
                any::<u64>(),
                proptest::collection::vec(name(), 0..3),
                proptest::option::of(status())
            )
                .prop_map(|(volume, sites, root)| Reply::MountRoot { volume, sites, root }),
            proptest::collection::vec(name(), 0..3).prop_map(Reply::Located),
            any::<u32>().prop_map(|index| Reply::Registered { index }),
        ];
        prop_oneof![
            ok.prop_map(Ok),
            (code(), name()).prop_map(|(c, m)| Err(RpcError::new(c, m)))
        ]
    }

    fn brk() -> impl Strategy<Value = Break> {
        (
            fid(),
            proptest::collection::vec(name(), 0..3),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(fid, names, deleted, seq)| Break {
                fid,
                names,
                deleted,
                seq,
            })
    }

    fn server_message() -> impl Strategy<Value = ServerMessage> {
        prop_oneof![
            proptest::collection::vec(brk(), 0..4).prop_map(ServerMessage::Break),
            any::<u64>().prop_map(ServerMessage::BreakVolume),
            proptest::collection::vec(
                (brk(), status(), proptest::collection::vec(any::<u8>(), 0..300))
                    .prop_map(|(brk, status, data)| Renewal { brk, status, data }),
                0..3
            )
            .prop_map(ServerMessage::Renewed),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(req in request()) {
            let bytes = encode(&req).unwrap();
            prop_assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        }

        #[test]
        fn replies_round_trip(rep in reply()) {
            let bytes = encode(&rep).unwrap();
            prop_assert_eq!(decode::<Result<Reply, RpcError>>(&bytes).unwrap(), rep);
        }

        #[test]
        fn server_messages_round_trip(msg in server_message()) {
            let bytes = encode(&msg).unwrap();
            prop_assert_eq!(decode::<ServerMessage>(&bytes).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Result<Reply, RpcError>>(&bytes);
            let _ = decode::<ServerMessage>(&bytes);
        }

        #[test]
        fn truncated_frames_are_errors(req in request(), cut in any::<proptest::sample::Index>()) {
            let bytes = encode(&req).unwrap();
            let cut = cut.index(bytes.len());
            prop_assert!(decode::<Request>(&bytes[..cut]).is_err());
        }

        #[test]
        fn frames_round_trip_and_reject_oversize(req in request()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut buf = Vec::new();
                write_frame(&mut buf, &req).await.unwrap();
                let back: Request = read_frame(&mut buf.as_slice(), MAX_FRAME).await.unwrap();
                assert_eq!(back, req);
                let small = (buf.len() - 5) as u32;
                assert!(matches!(
                    read_frame::<_, Request>(&mut buf.as_slice(), small).await,
                    Err(CodecError::TooLarge { .. })
                ));
                assert!(matches!(
                    read_frame::<_, Request>(&mut &buf[..buf.len() - 1], MAX_FRAME).await,
                    Err(CodecError::Truncated)
                ));
            });
        }
    }

    #[test]
    fn huge_collection_length_is_refused_without_allocating() {
        // A ListVolumes-style reply claiming 2^60 entries in a few bytes.
        let mut bytes = encode(&Ok::<Reply, RpcError>(Reply::Volumes(vec![]))).unwrap();
        bytes.pop();
        bytes.extend_from_slice(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(decode::<Result<Reply, RpcError>>(&bytes).is_err());
    }

    #[test]
    fn golden_bytes() {
        // Changing the wire format must be deliberate: bump the ALPN version.
        let req = Request::Lookup {
            dir: Fid {
                volume: 1,
                vnode: 2,
                unique: 3,
            },
            name: "a".into(),
        };
        assert_eq!(encode(&req).unwrap(), vec![6, 1, 2, 3, 1, b'a']);
    }
}
