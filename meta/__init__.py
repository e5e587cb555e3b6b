"""DRBD v08 on-disk metadata, bit-compatible with drbd-utils' drbdmeta.

Modules, one job each:

* ``layout``       where metadata lives; ``usable_data_size()`` (the exported size)
* ``backing``      open a block device or regular file; exact pread/pwrite; flock
* ``superblock``   the 4 KiB v08 superblock, MDF_* flags, validation
* ``bitmap``       the in-memory dirty bitmap (1 bit per 4 KiB), dirty-page flushing
* ``activity_log`` AL transactions, replay (drbdmeta's replay_al_84), the AL writer
* ``al07``         replay of the pre-8.4 activity log (upgrades)
* ``metadata``     ``Metadata``: open/create/attach/detach/apply_al for one volume
* ``dumpmd``       dump-md text and the restore-md parser
* ``gi``           get-gi/show-gi/dstate/set-gi texts
* ``detect``       filesystem signatures create-md must not overwrite silently
* ``drbdmeta``     the ``drbdmeta`` command line

``meta`` knows nothing about replication or configuration.
"""
