"""The logical Vulkan device behind :class:`halsim.backends.vulkan.VulkanDevice`.

* :class:`LogicalDevice`: a VkDevice with every queue of the chosen copy
  family (each behind a lock: queues need external synchronisation), counted
  allocations (:meth:`LogicalDevice.live`), device-local and mapped host
  memory, host-pointer import (VK_EXT_external_memory_host), copies, and the
  file-import probe.
* :class:`Allocation`: the VkBuffers and VkDeviceMemory one object owns.
* :class:`CommandContext`: a command pool, command buffer and fence reused by
  one thread for every copy it makes.
"""

from __future__ import annotations

import mmap
import tempfile
import threading
from typing import Any

import numpy as np

from halsim.errors import DeviceError, DeviceUnavailableError, ImportRefusedError, OutOfMemoryError
from halsim.files import address_of

from .vulkan_extent import Extent, Piece, align_down, align_up, copy_regions
from .vulkan_instance import _RESULT_NAMES, Instance, PhysicalInfo, VulkanCallError, check, const

__all__ = ["Allocation", "CommandContext", "LogicalDevice"]


class Allocation:
    """VkBuffers and VkDeviceMemory one object owns; :meth:`free` releases them once."""

    def __init__(self, device: "LogicalDevice", extent: Extent, objects: list[tuple[Any, Any]],
                 host: memoryview | None = None, memory_flags: int = 0):
        self.device = device
        self.extent = extent
        self.objects = objects  # [(VkBuffer, VkDeviceMemory)]
        self.host = host  # host bytes behind the extent, when there are some
        self.memory_flags = memory_flags
        self.keep: list[Any] = []  # whatever must outlive the memory (mappings, views)

    @property
    def size(self) -> int:
        return self.extent.size

    def free(self) -> None:
        objects, self.objects = self.objects, []
        self.host = None
        for buffer, memory in objects:
            self.device.destroy_buffer(buffer)
            if memory is not None:
                self.device.free_memory(memory)
        for item in self.keep:  # views first, then the mappings they look into
            try:
                if isinstance(item, memoryview):
                    item.release()
                elif hasattr(item, "close"):
                    item.close()
            except (BufferError, ValueError):
                pass
        self.keep = []


class CommandContext:
    """A command pool, one command buffer and one fence, used by one thread at a time.

    The command buffer is re-recorded only when a copy's regions differ from
    the ones it already holds, so repeating a copy resubmits it as is.
    """

    def __init__(self, device: "LogicalDevice"):
        vk, ffi, lib = device.vk, device.ffi, device.lib
        self.device = device
        self.pool = self.command = self.fence = None
        self.key: Any = None
        self.dirty = False  # a submission may still be running (its wait failed)
        try:
            pool = ffi.new("VkCommandPool*")
            check(lib.vkCreateCommandPool(device.handle, ffi.new("VkCommandPoolCreateInfo*", {
                "sType": vk.VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                "flags": vk.VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                "queueFamilyIndex": device.info.queue_family,
            }), ffi.NULL, pool), "vkCreateCommandPool", device.name)
            self.pool = pool[0]
            device.count("command_pool", 1)
            command = ffi.new("VkCommandBuffer*")
            check(lib.vkAllocateCommandBuffers(device.handle, ffi.new("VkCommandBufferAllocateInfo*", {
                "sType": vk.VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                "commandPool": self.pool,
                "level": vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                "commandBufferCount": 1,
            }), command), "vkAllocateCommandBuffers", device.name)
            self.command = command[0]
            fence = ffi.new("VkFence*")
            check(lib.vkCreateFence(device.handle, ffi.new("VkFenceCreateInfo*", {
                "sType": vk.VK_STRUCTURE_TYPE_FENCE_CREATE_INFO}), ffi.NULL, fence), "vkCreateFence", device.name)
            self.fence = fence[0]
            device.count("fence", 1)
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        device = self.device
        if self.dirty:
            device.wait_idle()
        if self.fence is not None:
            device.lib.vkDestroyFence(device.handle, self.fence, device.ffi.NULL)
            device.count("fence", -1)
            self.fence = None
        if self.pool is not None:  # frees its command buffer too
            device.lib.vkDestroyCommandPool(device.handle, self.pool, device.ffi.NULL)
            device.count("command_pool", -1)
            self.pool = self.command = None


# ---------------------------------------------------------------------------------------
# Logical device
# ---------------------------------------------------------------------------------------

FENCE_TIMEOUT_NS = 600 * 10**9  # a copy taking longer than this is reported as a hang


class LogicalDevice:
    """A VkDevice on one physical device, with every queue of its copy family."""

    def __init__(self, instance: Instance, info: PhysicalInfo, name: str, max_piece: int | None = None):
        vk, ffi, lib = instance.vk, instance.ffi, instance.lib
        self.vk, self.ffi, self.lib = vk, ffi, lib
        self.instance = instance
        self.info = info
        self.name = name
        self.handle = None
        self._counts_lock = threading.Lock()
        self.generation = 0  # buffers destroyed so far: recordings from before are stale
        self.counts: dict[str, int] = {"memory": 0, "buffer": 0, "command_pool": 0, "fence": 0}
        # The largest piece of one VkBuffer/VkDeviceMemory: split bigger buffers.
        limit = min(info.max_allocation, info.max_buffer)
        if max_piece is not None:
            limit = min(limit, max_piece)
        self.max_piece = max(align_down(limit, 1 << 16), 1 << 16) if limit >= 1 << 16 else limit
        priorities = ffi.new("float[]", [1.0] * info.queue_count)
        queue_info = ffi.new("VkDeviceQueueCreateInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
            "queueFamilyIndex": info.queue_family,
            "queueCount": info.queue_count,
            "pQueuePriorities": priorities,
        })
        names = [ffi.new("char[]", b"VK_EXT_external_memory_host")] if info.host_import else []
        ext_array = ffi.new("char*[]", names) if names else ffi.NULL
        create = ffi.new("VkDeviceCreateInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
            "queueCreateInfoCount": 1,
            "pQueueCreateInfos": queue_info,
            "enabledExtensionCount": len(names),
            "ppEnabledExtensionNames": ext_array,
        })
        handle = ffi.new("VkDevice*")
        result = lib.vkCreateDevice(info.handle, create, ffi.NULL, handle)
        if result != 0:
            raise DeviceUnavailableError(
                f"{name}: unavailable (vkCreateDevice failed on {info.name}: {_RESULT_NAMES.get(result, result)})"
            )
        self.handle = handle[0]
        self.queues = []
        for i in range(info.queue_count):
            queue = ffi.new("VkQueue*")
            lib.vkGetDeviceQueue(self.handle, info.queue_family, i, queue)
            self.queues.append(queue[0])
        self.queue_locks = [threading.Lock() for _ in self.queues]  # queues need external sync
        self._host_pointer_properties = None
        if info.host_import:
            pointer = lib.vkGetDeviceProcAddr(self.handle, b"vkGetMemoryHostPointerPropertiesEXT")
            if pointer != ffi.NULL:
                self._host_pointer_properties = ffi.cast("PFN_vkGetMemoryHostPointerPropertiesEXT", pointer)
        self._utility_lock = threading.Lock()
        # The read-back context lives as long as the device: made now, so it is
        # part of every baseline rather than appearing mid-run as a "leak".
        try:
            self._utility: CommandContext | None = CommandContext(self)
        except BaseException:
            lib.vkDestroyDevice(self.handle, ffi.NULL)
            self.handle = None
            raise
        instance.devices.add(self)

    # ----- bookkeeping -------------------------------------------------------------
    def count(self, kind: str, delta: int) -> None:
        with self._counts_lock:
            self.counts[kind] = self.counts.get(kind, 0) + delta

    def live(self) -> dict[str, int]:
        """Live objects this device created: VkDeviceMemory, VkBuffer, command pools, fences."""
        with self._counts_lock:
            return dict(self.counts)

    @property
    def can_import(self) -> bool:
        return self._host_pointer_properties is not None

    # ----- memory ------------------------------------------------------------------
    def memory_type(self, bits: int, required: int, prefer: int = 0, avoid: int = 0) -> int:
        """The memory type allowed by ``bits`` with ``required`` flags, scored by preferences."""
        best = None
        for index, (flags, _heap) in enumerate(self.info.memory_types):
            if not bits & (1 << index) or flags & required != required:
                continue
            score = 2 * bin(flags & prefer).count("1") - 2 * bin(flags & avoid).count("1") - bin(flags).count("1") / 16
            if best is None or score > best[0]:
                best = (score, index)
        if best is None:
            raise OutOfMemoryError(f"no memory type with flags {required:#x} for this buffer", device=self.name)
        return best[1]

    def create_buffer(self, size: int, external_host: bool = False):
        vk, ffi = self.vk, self.ffi
        external = ffi.NULL
        if external_host:
            external = ffi.new("VkExternalMemoryBufferCreateInfo*", {
                "sType": vk.VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
                "handleTypes": vk.VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
            })
        info = ffi.new("VkBufferCreateInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
            "pNext": external,
            "size": size,
            "usage": vk.VK_BUFFER_USAGE_TRANSFER_SRC_BIT | vk.VK_BUFFER_USAGE_TRANSFER_DST_BIT,
            "sharingMode": vk.VK_SHARING_MODE_EXCLUSIVE,
        })
        out = ffi.new("VkBuffer*")
        check(self.lib.vkCreateBuffer(self.handle, info, ffi.NULL, out), "vkCreateBuffer", self.name)
        self.count("buffer", 1)
        return out[0]

    def destroy_buffer(self, buffer) -> None:
        self.lib.vkDestroyBuffer(self.handle, buffer, self.ffi.NULL)
        self.count("buffer", -1)
        # A recorded command buffer holds the addresses of the buffers it names, and
        # a new VkBuffer may get a destroyed one's handle value (NVIDIA does): no
        # recording made before a destroy may be replayed after it.
        self.generation += 1

    def requirements(self, buffer):
        reqs = self.ffi.new("VkMemoryRequirements*")
        self.lib.vkGetBufferMemoryRequirements(self.handle, buffer, reqs)
        return reqs

    def allocate_memory(self, size: int, type_index: int, chain=None):
        vk, ffi = self.vk, self.ffi
        info = ffi.new("VkMemoryAllocateInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
            "pNext": chain if chain is not None else ffi.NULL,
            "allocationSize": size,
            "memoryTypeIndex": type_index,
        })
        out = ffi.new("VkDeviceMemory*")
        check(self.lib.vkAllocateMemory(self.handle, info, ffi.NULL, out), "vkAllocateMemory", self.name)
        self.count("memory", 1)
        return out[0]

    def free_memory(self, memory) -> None:
        self.lib.vkFreeMemory(self.handle, memory, self.ffi.NULL)
        self.count("memory", -1)

    def map(self, memory, size: int) -> memoryview:
        """Map all of ``memory`` (``size`` bytes) once; a writable byte view of it."""
        pointer = self.ffi.new("void**")
        check(self.lib.vkMapMemory(self.handle, memory, 0, size, 0, pointer), "vkMapMemory", self.name)
        return memoryview(self.ffi.buffer(pointer[0], size))

    def _bound_buffer(self, size: int, required: int, prefer: int, avoid: int, what: str):
        """One VkBuffer with its own memory; returns (buffer, memory, memory flags)."""
        buffer = self.create_buffer(size)
        memory = None
        try:
            reqs = self.requirements(buffer)
            type_index = self.memory_type(reqs.memoryTypeBits, required, prefer, avoid)
            memory = self.allocate_memory(reqs.size, type_index)
            check(self.lib.vkBindBufferMemory(self.handle, buffer, memory, 0), "vkBindBufferMemory", self.name)
            return buffer, memory, self.info.memory_types[type_index][0]
        except BaseException as err:
            if memory is not None:
                self.free_memory(memory)
            self.destroy_buffer(buffer)
            if isinstance(err, VulkanCallError) and err.out_of_memory:
                raise OutOfMemoryError(f"cannot allocate {size} bytes for {what}: {err}", device=self.name) from None
            raise

    def allocate_device(self, size: int, what: str) -> Allocation:
        """Device-local memory for ``size`` bytes, split into pieces of at most ``max_piece``."""
        vk = self.vk
        objects: list[tuple[Any, Any]] = []
        pieces, flags = [], 0
        try:
            for offset in range(0, size, self.max_piece):
                n = min(self.max_piece, size - offset)
                buffer, memory, flags = self._bound_buffer(
                    n, 0, vk.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, what)
                objects.append((buffer, memory))
                pieces.append(Piece(buffer, 0, n))
        except BaseException:
            Allocation(self, Extent(), objects).free()
            raise
        allocation = Allocation(self, Extent(pieces), objects, memory_flags=flags)
        return allocation

    def allocate_host(self, size: int, what: str) -> Allocation:
        """One mapped HOST_VISIBLE|HOST_COHERENT buffer of ``size`` (<= max_piece) bytes.

        Staging avoids device-local (BAR) memory on dedicated devices and
        prefers cached memory, like CUDA's pinned host memory: downloads' host
        reads would crawl through write-combined memory.
        """
        vk = self.vk
        required = vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | vk.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
        prefer = vk.VK_MEMORY_PROPERTY_HOST_CACHED_BIT
        avoid = vk.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT if self.info.kind == "dedicated" else 0
        buffer, memory, flags = self._bound_buffer(size, required, prefer, avoid, what)
        try:
            view = self.map(memory, size)
        except BaseException:
            self.destroy_buffer(buffer)
            self.free_memory(memory)
            raise
        return Allocation(self, Extent([Piece(buffer, 0, size)]), [(buffer, memory)], host=view, memory_flags=flags)

    def import_host(self, view: memoryview, length: int, what: str) -> Allocation:
        """Import ``length`` bytes of host memory starting at ``view`` (VK_EXT_external_memory_host).

        The address and length must be multiples of ``minImportedHostPointerAlignment``:
        the drivers accept an unaligned pointer silently, so we check it here.
        """
        vk, ffi = self.vk, self.ffi
        if self._host_pointer_properties is None:
            raise ImportRefusedError("the device has no VK_EXT_external_memory_host", device=self.name)
        align = self.info.import_alignment or 1
        address = address_of(view) if len(view) else 0
        if address % align or length % align or length <= 0:
            raise ImportRefusedError(
                f"cannot import {what}: address {address:#x} and length {length} must be multiples of "
                f"minImportedHostPointerAlignment ({align})", device=self.name)
        # Bytes past the view are only allowed up to the end of its last page (a mapped
        # file's tail); anything further is not ours to import.
        if length > align_up(address + len(view), mmap.PAGESIZE) - address:
            raise ImportRefusedError(
                f"cannot import {what}: {length} bytes from {address:#x} run past the host memory "
                f"({len(view)} bytes)", device=self.name)
        handle_type = vk.VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT
        piece_limit = max(align_down(self.max_piece, align), align)
        objects: list[tuple[Any, Any]] = []
        pieces = []
        try:
            for offset in range(0, length, piece_limit):
                n = min(piece_limit, length - offset)
                pointer = ffi.cast("void*", address + offset)
                props = ffi.new("VkMemoryHostPointerPropertiesEXT*", {
                    "sType": vk.VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT})
                result = self._host_pointer_properties(self.handle, handle_type, pointer, props)
                if result != 0 or not props.memoryTypeBits:
                    raise ImportRefusedError(
                        f"the driver refuses to import {what} at {address + offset:#x} "
                        f"(vkGetMemoryHostPointerPropertiesEXT: {_RESULT_NAMES.get(result, result)}, "
                        f"memory types {props.memoryTypeBits:#x})", device=self.name)
                buffer = self.create_buffer(n, external_host=True)
                objects.append((buffer, None))
                reqs = self.requirements(buffer)
                bits = reqs.memoryTypeBits & props.memoryTypeBits
                if not bits or reqs.size > n:
                    raise ImportRefusedError(
                        f"cannot import {what}: no memory type fits both the buffer and the host pointer "
                        f"(buffer types {reqs.memoryTypeBits:#x} needing {reqs.size} bytes, "
                        f"pointer types {props.memoryTypeBits:#x})", device=self.name)
                type_index = self.memory_type(bits, 0)
                chain = ffi.new("VkImportMemoryHostPointerInfoEXT*", {
                    "sType": vk.VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
                    "handleType": handle_type,
                    "pHostPointer": pointer,
                })
                try:
                    memory = self.allocate_memory(n, type_index, chain)
                except VulkanCallError as err:
                    raise ImportRefusedError(f"the driver refuses to import {what}: {err}", device=self.name) from None
                objects[-1] = (buffer, memory)
                check(self.lib.vkBindBufferMemory(self.handle, buffer, memory, 0), "vkBindBufferMemory", self.name)
                pieces.append(Piece(buffer, 0, n))
        except BaseException:
            Allocation(self, Extent(), objects).free()
            raise
        allocation = Allocation(self, Extent(pieces), objects, host=view)
        allocation.keep.append(view)  # the host bytes must live as long as the import
        return allocation

    # ----- copies ------------------------------------------------------------------
    def command_context(self) -> CommandContext:
        return CommandContext(self)

    def copy(self, context: CommandContext, queue: int, groups, to_host: bool = False) -> None:
        """Run ``groups`` (from :func:`copy_regions`) on ``queue``; return once they finished."""
        if not groups:
            return
        vk, ffi, lib = self.vk, self.ffi, self.lib
        key = (self.generation, tuple((int(ffi.cast("uintptr_t", s)), int(ffi.cast("uintptr_t", d)), tuple(r))
                                      for s, d, r in groups), to_host)
        command = context.command
        if key != context.key:
            context.key = None
            check(lib.vkResetCommandBuffer(command, 0), "vkResetCommandBuffer", self.name)
            check(lib.vkBeginCommandBuffer(command, ffi.new("VkCommandBufferBeginInfo*", {
                "sType": vk.VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO})), "vkBeginCommandBuffer", self.name)
            for src, dst, regions in groups:
                array = ffi.new("VkBufferCopy[]", [{"srcOffset": s, "dstOffset": d, "size": n} for s, d, n in regions])
                lib.vkCmdCopyBuffer(command, src, dst, len(regions), array)
            # Make the copies' writes available to later device work on any queue,
            # and visible to the host when it reads the target (downloads).
            # (Host reads matter for downloads, and for device memory the host can map.)
            barrier = ffi.new("VkMemoryBarrier*", {
                "sType": vk.VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                "srcAccessMask": vk.VK_ACCESS_TRANSFER_WRITE_BIT,
                "dstAccessMask": vk.VK_ACCESS_MEMORY_READ_BIT | vk.VK_ACCESS_MEMORY_WRITE_BIT | vk.VK_ACCESS_HOST_READ_BIT,
            })
            lib.vkCmdPipelineBarrier(command, vk.VK_PIPELINE_STAGE_TRANSFER_BIT,
                                     vk.VK_PIPELINE_STAGE_ALL_COMMANDS_BIT | vk.VK_PIPELINE_STAGE_HOST_BIT,
                                     0, 1, barrier, 0, ffi.NULL, 0, ffi.NULL)
            check(lib.vkEndCommandBuffer(command), "vkEndCommandBuffer", self.name)
            context.key = key
        self.submit_and_wait(context, queue)

    def submit_and_wait(self, context: CommandContext, queue: int) -> None:
        vk, ffi, lib = self.vk, self.ffi, self.lib
        commands = ffi.new("VkCommandBuffer[]", [context.command])
        submit = ffi.new("VkSubmitInfo*", {
            "sType": vk.VK_STRUCTURE_TYPE_SUBMIT_INFO,
            "commandBufferCount": 1,
            "pCommandBuffers": commands,
        })
        index = queue % len(self.queues)
        with self.queue_locks[index]:
            check(lib.vkQueueSubmit(self.queues[index], 1, submit, context.fence), "vkQueueSubmit", self.name)
        context.dirty = True
        fences = ffi.new("VkFence[]", [context.fence])
        result = lib.vkWaitForFences(self.handle, 1, fences, 1, FENCE_TIMEOUT_NS)  # cffi drops the GIL here
        if result == const("VK_TIMEOUT", 2):
            raise DeviceError(f"a copy did not finish in {FENCE_TIMEOUT_NS // 10**9} s", device=self.name)
        check(result, "vkWaitForFences", self.name)
        context.dirty = False
        check(lib.vkResetFences(self.handle, 1, fences), "vkResetFences", self.name)

    def wait_idle(self) -> None:
        locks = list(self.queue_locks)
        for lock in locks:
            lock.acquire()
        try:
            self.lib.vkDeviceWaitIdle(self.handle)
        finally:
            for lock in reversed(locks):
                lock.release()

    def read(self, extent: Extent, offset: int, length: int, out: memoryview | None = None,
             chunk: int = 16 << 20) -> bytes | None:
        """Copy device bytes to the host through a temporary staging buffer (verification, probes)."""
        target = out if out is not None else memoryview(bytearray(length))
        if length == 0:
            return None if out is not None else b""
        with self._utility_lock:
            if self._utility is None:
                self._utility = CommandContext(self)
            staging = self.allocate_host(min(chunk, length), "a read-back buffer")
            try:
                for at in range(0, length, chunk):
                    n = min(chunk, length - at)
                    groups = copy_regions(extent, offset + at, staging.extent, 0, n)
                    self.copy(self._utility, 0, groups, to_host=True)
                    target[at : at + n] = staging.host[:n]
            finally:
                staging.free()
        return None if out is not None else bytes(target)

    def probe_file_import(self) -> str | None:
        """Import a page of a mapped temporary file and read it back through the device.

        Some drivers refuse or mishandle file-backed host memory (Mesa issue
        9251); returns None when the round trip is byte-exact, else why not.
        """
        if not self.can_import:
            return "the device has no VK_EXT_external_memory_host"
        align = max(self.info.import_alignment, mmap.PAGESIZE)
        pattern = np.random.default_rng(9251).integers(0, 256, align, dtype=np.uint8).tobytes()
        try:
            with tempfile.TemporaryFile(prefix="halsim-vulkan-probe-") as f:
                f.write(pattern)
                f.flush()
                mapping = mmap.mmap(f.fileno(), align, mmap.MAP_SHARED, mmap.PROT_READ)
                view = memoryview(mapping)
                try:
                    imported = self.import_host(view, align, "a mapped probe file")
                    try:
                        got = self.read(imported.extent, 0, align)
                    finally:
                        imported.free()
                finally:
                    view.release()
                    mapping.close()
        except (ImportRefusedError, VulkanCallError) as err:
            return str(err)
        except OSError as err:
            return f"cannot make a probe file: {err}"
        if got != pattern:
            return "the driver imported a mapped file but the device read different bytes from it"
        return None

    def close(self) -> None:
        if self.handle is None:
            return
        self.lib.vkDeviceWaitIdle(self.handle)
        if self._utility is not None:
            self._utility.destroy()
            self._utility = None
        self.lib.vkDestroyDevice(self.handle, self.ffi.NULL)
        self.handle = None
        self.instance.devices.discard(self)
